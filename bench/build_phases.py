"""Where a cold build's time goes: one process builds a model's kernels one after another
(as `kcomp build --jobs 1` does) and times each phase, in wall seconds and in CPU seconds (this
process's, plus the tools it runs: ptxas, cuobjdump).

  python bench/build_phases.py MODEL.k [--train] [--target sm_90] [--kcomp-root DIR]

Prints one JSON object: {"phases": {name: {"wall": s, "cpu": s, "calls": n}}, "kernels": n}. The
phases: importing kcomp's CLI (torch among it), the passes, per kernel kcomp's own work (the
generated module loaded, example tensors, the launch recorded), Triton's front end and each
compiler stage (ttir, ttgir, llir, ptx, cubin = ptxas), the resource usage (`cuobjdump
-res-usage`), the tensor cores counted in the PTX, and `cuobjdump -sass` (which a build runs only
for `--emit sass` since issue 17 part 9; timed here for every kernel, to show what it costs).
--kcomp-root times another checkout's kcomp (the one before a change) by the same phases.
"""

import functools
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

PHASES: dict = defaultdict(lambda: {"wall": 0.0, "cpu": 0.0, "calls": 0})


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class timed:
    """Within: wall and CPU seconds added to PHASES[name] (nested phases are not subtracted)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu()

    def __exit__(self, *exc):
        phase = PHASES[self.name]
        phase["wall"] += time.perf_counter() - self.wall
        phase["cpu"] += _cpu() - self.cpu
        phase["calls"] += 1


def _wrap(owner, attribute: str, phase: str) -> None:
    """owner.attribute timed as `phase` on every call (a staticmethod stays one)."""
    import inspect

    static = isinstance(inspect.getattr_static(owner, attribute), staticmethod)
    function = getattr(owner, attribute)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with timed(phase):
            return function(*args, **kwargs)

    setattr(owner, attribute, staticmethod(wrapper) if static else wrapper)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--target", default="sm_90")
    parser.add_argument("--kcomp-root", type=Path, help="the checkout whose kcomp is timed (default: this one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str((args.kcomp_root or Path(__file__).resolve().parent.parent).resolve()))

    with timed("import kcomp.cli (torch among it)"):
        from kcomp import cli, compiler
    with timed("load the model, passes"):
        import kcomp.dsl

        model = next(iter(kcomp.dsl.load(args.model).values()))
        if args.train:
            cli._compile_from_section(model, args.model)
        options = compiler.BuildOptions(target=args.target, emit=("ptx", "cubin"), jobs=1, train=args.train)
        built = compiler.build_graphs(model, options, None)
    with timed("kernel sources"):
        compiler.kernel_entries(built, options, Path("/nonexistent-kcomp-bench"))

    import triton.compiler.compiler as triton_compiler
    from triton.backends.nvidia.compiler import CUDABackend

    from kcomp.runtime import kernel_cache
    from kcomp.runtime.aot import compile as aot_compile
    from kcomp.runtime.aot import results

    _wrap(kernel_cache, "load_kernel", "kcomp: generated module loaded")
    _wrap(aot_compile, "example_inputs", "kcomp: example tensors")
    _wrap(aot_compile, "record_launches", "kcomp: launch recorded")
    _wrap(triton_compiler.ASTSource, "make_ir", "triton: front end (Python AST -> ttir)")
    for stage in ("make_ttir", "make_ttgir", "make_llir", "make_ptx", "make_cubin"):
        _wrap(CUDABackend, stage, f"triton: {stage}" + (" (ptxas)" if stage == "make_cubin" else ""))
    _wrap(aot_compile, "_resource_usage", "cuobjdump -res-usage")
    for entry in built.kernels:
        with timed("compile_node (all of the above)"):
            result = aot_compile.compile_node(entry["_node"], entry["kernel"], args.target, "tf32", options.batch)
        if hasattr(results, "ptx_tensor_core_counts"):
            with timed("tensor cores counted in the PTX"):
                result.ptx_tensor_core_counts()
        with timed("cuobjdump -sass (tensor cores counted in the SASS)"):
            result.tensor_core_counts()
    print(json.dumps({"kernels": len(built.kernels), "phases": PHASES}))



if __name__ == "__main__":
    main()
