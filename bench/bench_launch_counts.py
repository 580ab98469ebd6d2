"""Launches per training step of every example model, as its plan runs them (no GPU needed).

A step of a small model (the seed's sentiment LSTM at batch 32) is launch-bound on a GPU, so
the count is the figure to watch: each generated kernel is one launch, and each node left to
torch is at least one more (views and the shape-only results a plan makes once are not).

  python bench/bench_launch_counts.py [model ...]     # e.g. imdb_lstm:train mlp_digits:train
"""

import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the examples' graphs, as the AOT tests enumerate them


def step_launches(fused) -> tuple[int, Counter]:
    """(kernels, torch ops by name) that one run of the fused step graph launches, as the cost
    model counts them (kcomp/ir/cost.py: launched); a reshape that torch must copy counts as a
    torch op ("copy")."""
    from kcomp.ir.cost import copies, launched

    copied = copies(fused)
    nodes = launched(fused)
    kernels = sum(n.op == "kernel" for n in nodes)
    torch_ops = Counter("copy" if id(n) in copied else n.op for n in nodes if n.op != "kernel")
    return kernels, torch_ops


def main(names: list[str]):
    from aot_helpers import example_graphs

    from kcomp.passes import run_pipeline

    for _, name, graph in example_graphs(training=True):
        if not name.endswith(":train") or (names and name not in names):
            continue
        fused, _ = run_pipeline(graph)
        kernels, torch_ops = step_launches(fused)
        others = ", ".join(f"{op} x{k}" for op, k in sorted(torch_ops.items()))
        print(f"{name:22s} {kernels + sum(torch_ops.values()):3d} launches: {kernels} kernels + torch ({others or 'none'})")


if __name__ == "__main__":
    main(sys.argv[1:])
