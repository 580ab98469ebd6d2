"""Pick a kernel's block sizes: on a GPU, time each candidate once and keep the fastest.

The first launch of a kernel at a new problem shape on a CUDA device runs
every candidate configuration (skipping those the GPU cannot launch), and the
choice is cached in memory and on disk (KCOMP_CACHE_DIR/autotune.json, keyed
by GPU, kernel, shapes and Triton version, whose compiler can change which config
is fastest; checked when read: kcomp.support.disk_cache), so later
processes reuse it. Off the GPU (the interpreter) the first candidate is used: timing there
means nothing. KCOMP_AUTOTUNE=0 makes a GPU use the first candidate too (kcomp/config.py).

A template's launch runs its kernel through a function decorated with `tuned`, which does the
choosing; the launch itself only checks and allocates.
"""

import functools
import json

from kcomp import config as kcomp_config
from kcomp.triton_compat import patch_interpreter
from kcomp.support.disk_cache import read_entry, write_entry

# Every template module imports this one before it can launch, so Triton 3.6's interpreter is
# fixed (kcomp.triton_compat) before it runs a kernel.
patch_interpreter()

_choices: dict[str, dict] | None = None


def _path():
    return kcomp_config.cache_dir() / "autotune.json"


def _read() -> dict[str, dict]:
    """The choices on disk; {} where the file is missing, damaged (it is checked against the size
    and digest written with it) or not a mapping of choices: it is then tuned again and rewritten."""
    data = read_entry(_path())
    try:
        choices = json.loads(data) if data is not None else {}
    except ValueError:
        return {}
    if not isinstance(choices, dict) or not all(isinstance(v, dict) for v in choices.values()):
        return {}
    return choices


def _load() -> dict[str, dict]:
    global _choices
    if _choices is None:
        _choices = _read()
    return _choices


def _save(key: str, choice: dict) -> None:
    # Merge with what other processes wrote since we read it; the write is atomic. Where the
    # file cannot be written (another user's cache), the choice stays in this process's memory.
    on_disk = _read()
    on_disk[key] = choice
    write_entry(_path(), (json.dumps(on_disk, indent=1, sort_keys=True) + "\n").encode())


def choose_config(kernel_id: str, inputs: tuple, candidates: list[dict], run, out, options: dict | None = None,
                  graph_timed: bool = False) -> dict:
    """The configuration to launch with; `run(config)` launches the kernel once (a stepwise
    recurrent scan: once per time step).

    `options` are the launch's other keywords: those that change the compiled kernel at the same
    shapes (a matmul's precision: "tf32" and "ieee" are different programs whose fastest tiles
    differ) are part of the choice's key (_variant), so a choice timed for one is not reused for
    the other.

    `out` is the output buffer, or a tuple of them for a kernel with several outputs. An output
    that is also an input (a training step writing new weights or running sums in place) is put
    back as it was after the timing runs, which would otherwise apply the update many times.

    graph_timed: each candidate's run is timed replayed from a CUDA graph (its kernels alone), not
    launched from Python: a run of many small launches costs its launches' Python time when timed
    the other way, which a model's captured steps never pay (kcomp/runtime/cuda_graphs.py).
    """
    outs = out if isinstance(out, tuple) else (out,)
    out = outs[0]
    if len(candidates) == 1 or not _on_gpu(out) or not kcomp_config.autotune():
        return candidates[0]
    import torch
    import triton
    import triton.testing
    from triton.runtime.errors import OutOfResources

    shapes = ",".join(f"{tuple(t.shape)}:{t.dtype}" for t in inputs if hasattr(t, "shape"))
    key = f"{torch.cuda.get_device_name(out.device)}|{kernel_id}{_variant(options or {})}|{shapes}|triton {triton.__version__}"
    choices = _load()
    if choices.get(key) in candidates:  # a choice no longer among the candidates is tuned again
        return choices[key]
    timings = []
    read = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
    in_place = [(o, o.clone()) for o in outs if isinstance(o, torch.Tensor) and o.untyped_storage().data_ptr() in read]
    for candidate in candidates:
        try:
            if graph_timed:
                ms = triton.testing.do_bench_cudagraph(lambda: run(candidate), rep=20)
            else:
                ms = triton.testing.do_bench(lambda: run(candidate), warmup=3, rep=20)
            timings.append((ms, candidate))
        except OutOfResources:
            continue  # too much shared memory or too many registers on this GPU
    for o, before in in_place:
        o.copy_(before)
    if not timings:
        raise RuntimeError(f"{kernel_id}: no candidate configuration can launch on this GPU")
    best = min(timings, key=lambda t: t[0])[1]
    choices[key] = best
    _save(key, best)
    return best


def _variant(options: dict) -> str:
    """The launch options that select another compiled program (strings, numbers, flags: a
    precision), as a suffix of the choice's key; tensors and lists of arguments are left out."""
    scalars = sorted((k, v) for k, v in options.items() if isinstance(v, (str, int, float, bool)))
    return "".join(f"|{k}={v}" for k, v in scalars)


def tuned(candidates, graph_timed: bool = False):
    """Decorate a template's `run(call, config, **options)`, which launches its kernel once with
    one block-size config: the decorated run takes config=None and then picks one among
    `candidates(call, interpret)` (the configs worth trying for the call's sizes) with
    choose_config. `interpret` chooses whose configs: the interpreter's (few large programs) or
    a GPU's; None takes the interpreter's when the call's tensors are on the CPU. It does not
    choose how the kernel runs (that is the tensors' device and TRITON_INTERPRET): AOT
    compilation passes False to get the GPU's configs for CPU tensors. graph_timed: choose_config's.
    """

    def decorate(run):
        @functools.wraps(run)
        def tuned_run(call, config=None, interpret=None, **options):
            if config is None:
                configs = candidates(call, call.on_cpu if interpret is None else interpret)
                if _on_gpu(call.out) and not kcomp_config.autotune():
                    _first_that_launches(lambda c: run(call, c, **options), configs)
                    return
                config = choose_config(call.binding.kernel_id, call.inputs, configs,
                                       lambda c: run(call, c, **options), call.out, options, graph_timed)
            run(call, config, **options)

        return tuned_run

    return decorate


def _on_gpu(out) -> bool:
    """Whether a launch's output (the first, of several) is on a CUDA device: its kernels' GPU."""
    first = out[0] if isinstance(out, tuple) else out
    return first.device.type == "cuda"


def _first_that_launches(run, candidates: list[dict]) -> None:
    """KCOMP_AUTOTUNE=0 on a GPU: run the first candidate; where this GPU cannot launch it (too much
    shared memory or too many registers: raised when it compiles, before anything runs), the next."""
    from triton.runtime.errors import OutOfResources

    for candidate in candidates[:-1]:
        try:
            run(candidate)
            return
        except OutOfResources:
            continue
    run(candidates[-1])
