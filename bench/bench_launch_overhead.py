"""Host time of each generated kernel's launch, its Triton kernel stubbed out.

What a launch costs the CPU before the GPU sees it (check, allocate, choose the config, bind
the arguments): paid on every launch outside a CUDA graph (the first run of a shape, the
warm-up before a capture, a plan that is not captured). Every kernel of the training steps
of examples/mlp_digits.k and examples/cnn_digits.k at batch 128, on CPU tensors, with
Triton's launcher replaced by a no-op; best of 15 runs of 1000 launches each.

  python bench/bench_launch_overhead.py
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the examples' graphs, as the AOT tests enumerate them

MODELS = ("mlp_digits:train", "cnn_digits:train")


def main():
    from aot_helpers import example_kernels
    from triton.runtime.jit import KernelInterface

    from kcomp.codegen.module import kernel_source
    from kcomp.runtime import aot
    from kcomp.runtime.kernel_cache import load_kernel

    KernelInterface.__getitem__ = lambda self, grid: (lambda *args, **kwargs: None)  # no kernel runs
    totals: dict[str, float] = {}
    print(f"{'model':18s} {'kernel':10s} {'template':20s} host us per launch")
    for _, model, index, node in example_kernels(training=True):
        if model not in MODELS:
            continue
        module = load_kernel(kernel_source(node, index))
        inputs = aot.example_inputs(node, 128)
        out = module.launch(*inputs)
        best = float("inf")
        for _ in range(15):
            start = time.perf_counter()
            for _ in range(1000):
                module.launch(*inputs, out=out)
            best = min(best, (time.perf_counter() - start) / 1000 * 1e6)
        totals[model] = totals.get(model, 0.0) + best
        print(f"{model:18s} kernel_{index:<3d} {node.attrs['template']:20s} {best:7.1f}")
    for model, total in totals.items():
        print(f"{model}: {total:.1f} us for every launch of one step")


if __name__ == "__main__":
    main()
