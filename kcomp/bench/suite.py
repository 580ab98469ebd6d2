"""`kcomp bench`: runs the chosen suites, prints a table, writes results.json (and plots when
matplotlib is installed). On a CPU-only machine it runs what it can and lists what needs a GPU."""

import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kcomp.bench import compile_suite, kernel_suite, keras_child, models, report
from kcomp.bench.contenders import KcompModel, KerasModel, TorchLoop, measure
from kcomp.errors import ArgumentError

SUITES = ("models", "kernels", "compile")  # "all" runs these, in this order
DEVICES = ("cpu", "cuda")
CONTENDERS = ("torch eager", "kcomp", "torch.compile", "torch.compile (reduce-overhead)", "keras (torch)", "keras (jax)")
GPU_ONLY_CONTENDERS = {"torch.compile (reduce-overhead)": "CUDA graphs"}


@dataclass
class Options:
    suite: str = "all"
    device: str = "cpu"
    quick: bool = False
    out: str = "bench-results"
    models: list = field(default_factory=lambda: list(models.MODELS))
    contenders: list = field(default_factory=lambda: list(CONTENDERS))
    repeats: int | None = None  # default: 3 with --quick, else 5
    steps: int | None = None  # timed steps per block; default: 3 with --quick, else 20

    def __post_init__(self):
        _one_of("--suite", self.suite, SUITES + ("all",))
        _one_of("--device", self.device, DEVICES)
        for name in self.models:
            _one_of("--models", name, tuple(models.MODELS))
        for name in self.contenders:
            _one_of("--contenders", name, CONTENDERS)
        if "torch eager" not in self.contenders:
            raise ArgumentError(f"Received: --contenders={','.join(self.contenders)}; it must include 'torch eager', "
                                "the reference every other contender is checked against.")
        for flag, value in (("--repeats", self.repeats), ("--steps", self.steps)):
            if value is not None and value < 1:
                raise ArgumentError(f"Received: {flag}={value}; it must be at least 1.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ArgumentError("Received: --device=cuda, but torch sees no CUDA GPU here; use --device cpu.")
        self.repeats = self.repeats or (3 if self.quick else 5)
        self.steps = self.steps or (3 if self.quick else 20)


def _one_of(flag, value, allowed):
    if value not in allowed:
        raise ArgumentError(f"Received: {flag}={value!r}; expected one of {', '.join(allowed)}.")


def run(opts: Options, argv=None) -> dict:
    """Run the suites of `opts`, print the table, write the files; the results as written.
    argv: the command line after `kcomp`, kept in the results."""
    results = {"schema": "kcomp-bench/1", "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "command": shlex.join(["kcomp", *(argv or ["bench"])]), "machine": machine(opts.device),
               "device": opts.device, "quick": opts.quick, "suites": {}, "needs_gpu": []}
    for suite in SUITES if opts.suite == "all" else (opts.suite,):
        results["suites"][suite] = RUNNERS[suite](opts, results["needs_gpu"])
    report.print_table(results)
    report.write(results, Path(opts.out))
    return results


def machine(device) -> dict:
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "keras", "jax"):
        try:  # the installed version, without importing it (Keras with no KERAS_BACKEND set imports TensorFlow)
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    import kcomp

    versions["kcomp"] = kcomp.__version__
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "gpu": gpu, "versions": versions}


def run_models(opts: Options, needs_gpu: list) -> dict:
    # torch.compile's cold first step: with a compile cache of this run's own, not what an earlier
    # run left on disk (a second run here took 0.6-1.1 s per model, the first 4.1-7.4 s).
    with _fresh_inductor_cache():
        return _run_models(opts, needs_gpu)


@contextlib.contextmanager
def _fresh_inductor_cache():
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:  # the user's choice: kept
        yield
        return
    folder = tempfile.mkdtemp(prefix="kcomp-bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    try:
        yield
    finally:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def _run_models(opts: Options, needs_gpu: list) -> dict:
    rows, jax_jobs = [], []
    for name in opts.models:
        spec = models.MODELS[name]
        batch = models.QUICK_BATCH.get(name, spec.batch) if opts.quick else spec.batch
        x, y = spec.data(batch, opts.quick)
        start = time.perf_counter()
        entries, job = model_entries(spec, x, y, opts, needs_gpu)
        rows.append({"model": name, "title": spec.title, "batch": batch, "input_shape": list(x.shape), "contenders": entries})
        if job is not None:
            jax_jobs.append((len(rows) - 1, job))
        print(f"  measured {spec.title} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if jax_jobs:  # one child process for all models: Keras on JAX takes seconds to import
        tolerance = _tolerance(opts.device)
        got = keras_child.run("jax", [job for _, job in jax_jobs], steps=opts.steps, repeats=opts.repeats, device=opts.device, **tolerance)
        for (row_index, _), entry in zip(jax_jobs, got):
            rows[row_index]["contenders"]["keras (jax)"] = entry
    for row in rows:
        row["kcomp_speedup"] = speedups(row["contenders"])
    return {"rows": rows}


def _tolerance(device) -> dict:
    return {"rtol": 1e-2, "atol": 1e-3} if device == "cuda" else {"rtol": 1e-4, "atol": 1e-5}  # TF32 on a GPU


def model_entries(spec, x, y, opts, needs_gpu) -> tuple[dict, tuple | None]:
    """The in-process contenders' entries, and the Keras-on-JAX job for the child process (None: not asked)."""
    import kcomp.layers
    import kcomp.models

    # Keras's initializers (glorot_uniform, orthogonal, ...); copies, since get_weights may share memory.
    weights = [np.array(w, copy=True) for w in kcomp.models.Sequential(spec.layers(kcomp.layers, x.shape[1:])).get_weights()]
    d = opts.device
    build = {
        "torch eager": lambda: TorchLoop(spec, weights, x, y, d),
        "kcomp": lambda: KcompModel(spec, weights, x, y, d),
        "torch.compile": lambda: TorchLoop(spec, weights, x, y, d, mode="default"),
        "torch.compile (reduce-overhead)": lambda: TorchLoop(spec, weights, x, y, d, mode="reduce-overhead"),
        "keras (torch)": lambda: _keras_in_process(spec, weights, x, y, d),
    }
    skipped = {n: GPU_ONLY_CONTENDERS[n] for n in opts.contenders if n in GPU_ONLY_CONTENDERS and d != "cuda"}
    for n, why in skipped.items():
        needs_gpu.append(f"models/{spec.name}: {n} ({why})")
    factories = {n: build[n] for n in opts.contenders if n in build and n not in skipped}
    entries, reference = measure(factories, batch=len(x), steps=opts.steps, repeats=opts.repeats, device=d, **_tolerance(d))
    entries.update({n: {"status": "needs a GPU", "reason": why} for n, why in skipped.items()})
    wants_jax = "keras (jax)" in opts.contenders and reference is not None
    return entries, (spec, weights, x, y, reference, len(x)) if wants_jax else None


def _keras_in_process(spec, weights, x, y, device):
    """Keras on torch here when this process's Keras runs torch (or is not yet imported); else in a child."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise ImportError(f"this process's Keras runs {keras.backend.backend()}; set KERAS_BACKEND=torch")
    return KerasModel(spec, weights, x, y, device)


def speedups(entries) -> dict:
    """kcomp's rate over each timed contender's (above 1: kcomp is faster), training and predict."""
    kcomp = entries.get("kcomp", {})
    if kcomp.get("status") != "timed":
        return {}
    return {name: {k: kcomp[k] / e[k] for k in ("train_steps_per_s", "predict_samples_per_s")}
            for name, e in entries.items() if name != "kcomp" and e.get("status") == "timed"}


RUNNERS = {"models": run_models, "kernels": kernel_suite.run, "compile": compile_suite.run}
