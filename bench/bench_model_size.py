"""How building a model scales with its number of layers (issue 11: it must be linear).

Prints, for Sequential stacks of N Dense(4) layers added one by one, the seconds to add them,
to trace the IR graph, and for the same model as a .k file the seconds of `kcomp check`'s
parse + build; and the time per layer, which stays flat when building is linear.

    .venv/bin/python bench/bench_model_size.py [--sizes 500,1000,2000,4000,8000]
"""

import argparse
import time

import kcomp
from kcomp.dsl import loads
from kcomp.layers import Dense


def build_by_add(n: int) -> tuple[float, float]:
    kcomp.backend.clear_session()
    start = time.perf_counter()
    model = kcomp.Sequential([kcomp.Input((4,))])
    for _ in range(n):
        model.add(Dense(4))
    added = time.perf_counter() - start
    start = time.perf_counter()
    model.to_graph()
    return added, time.perf_counter() - start


def build_from_text(n: int) -> float:
    kcomp.backend.clear_session()
    text = "model big {\n  input(4)\n" + "  dense(4)\n" * n + "}\n"
    start = time.perf_counter()
    loads(text)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2000,4000,8000")
    args = parser.parse_args()
    print(f"{'layers':>7} {'add (s)':>9} {'to_graph (s)':>13} {'.k build (s)':>13} {'add per layer (ms)':>19}")
    for n in (int(s) for s in args.sizes.split(",")):
        added, traced = build_by_add(n)
        text = build_from_text(n)
        print(f"{n:>7} {added:>9.2f} {traced:>13.2f} {text:>13.2f} {1000 * added / n:>19.3f}")


if __name__ == "__main__":
    main()
