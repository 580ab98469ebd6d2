"""Helpers shared by the kernel tests: the one comparison of compiled results with the reference."""

from typing import NamedTuple

import numpy as np
import torch

from tolerances import tolerance


NAN, INF = float("nan"), float("inf")


def with_nonfinite(x, places=(NAN, INF, -INF)):
    """A copy of float tensor x with NaN, +inf and -inf (or the values in `places`) written at evenly
    spread flat positions, so they land in different rows, windows and blocks."""
    x = x.clone()
    flat = x.view(-1)
    n = flat.numel()
    for i, value in enumerate(places):
        flat[(2 * i + 1) * n // (2 * len(places) + 1)] = value
    return x


def assert_same_nonfinite(got, want, *, rtol, atol):
    """Equal as np.testing.assert_allclose with NaN equal to NaN, after checking that NaN, +inf and
    -inf sit at exactly the same places (a kernel that drops a NaN fails here, naming where)."""
    got = got.float().numpy() if hasattr(got, "numpy") else np.asarray(got, dtype=np.float32)
    want = want.float().numpy() if hasattr(want, "numpy") else np.asarray(want, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        wrong = np.argwhere(test(got) != test(want))
        assert not len(wrong), f"{name} differs from the reference at {len(wrong)} places, first {tuple(wrong[0])}: " \
                               f"got {got[tuple(wrong[0])]}, reference {want[tuple(wrong[0])]}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)


def reference_in_float64(graph, inputs, params=None):
    """The reference executor on float64 copies of the inputs and weights. For NaN and inf checks:
    torch's float32 CPU gelu gives NaN at +inf (its vectorized erf); in float64, on CUDA and in
    the kernels gelu(+inf) is +inf."""
    from kcomp.runtime.reference import run_reference

    params = {name: w.double() if w.is_floating_point() else w for name, w in (params or {}).items()}
    return run_reference(graph, [t.double() if t.is_floating_point() else t for t in inputs], params)


def assert_matches_reference(got, want, *, kind, same_dtype=True):
    """Output i of `got` equals output i of `want` within tolerances.py's bound for its dtype and
    `kind`: the same count and shapes (and dtypes unless want is a float64 reference), NaN and
    +-inf at the same places."""
    assert len(got) == len(want), f"{len(got)} outputs, the reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: shape {tuple(g.shape)}, the reference's {tuple(w.shape)}"
        assert not same_dtype or g.dtype == w.dtype, f"output {i}: {g.dtype}, the reference's {w.dtype}"
        assert_same_nonfinite(g, w, **tolerance(g.dtype, kind))


class Compared(NamedTuple):
    fused: object  # the graph after the pass pipeline, its kernels as nodes
    executor: object  # the PlanExecutor that ran it: pass it back to run its plan on other inputs
    got: list
    want: list


def assert_compiled_matches_reference(graph, inputs, params=None, *, kind, float64_reference=False,
                                      precision="tf32", executor=None) -> Compared:
    """Run `graph` (or a Model: its graph and weights) on the fused plan of backend
    "triton-interpret" (or on `executor`, one made by an earlier call) and on the reference
    executor, in float64 with float64_reference (for NaN and inf checks: see reference_in_float64);
    every output as the reference's (assert_matches_reference)."""
    from kcomp.runtime.executor import PlanExecutor
    from kcomp.runtime.reference import run_reference

    if hasattr(graph, "to_graph"):
        graph, params = graph.to_graph(), graph.params()
    params = params or {}
    executor = executor or PlanExecutor(graph, "triton-interpret", precision)
    got = executor.run(inputs, params)
    want = (reference_in_float64 if float64_reference else run_reference)(graph, inputs, params)
    assert_matches_reference(got, want, kind=kind, same_dtype=not float64_reference)
    return Compared(executor.plan.graph, executor, got, want)


def launch_kernel(graph, kernel, inputs, poison=True, **launch_options):
    """(outputs, reference outputs): the generated kernel of `kernel`, one node of graph's fused
    form, launched directly on `inputs` (in graph's input order: the kernel takes them in its own),
    into output buffers filled with NaN (poison) or into the ones its template's launch allocates."""
    from kcomp.codegen.module import kernel_source
    from kcomp.runtime.kernel_cache import load_kernel
    from kcomp.runtime.reference import run_reference

    want = run_reference(graph, inputs, {})
    by_id = {v.id: t for v, t in zip(graph.inputs, inputs)}
    args = [by_id[v.id] for v in kernel.inputs]
    launch = load_kernel(kernel_source(kernel, 0)).launch
    if not poison:
        got = launch(*args, **launch_options)
        return (got if isinstance(got, tuple) else (got,)), want
    outs = tuple(torch.full(w.shape, float("nan"), dtype=w.dtype) for w in want)
    got = launch(*args, out=outs[0] if len(outs) == 1 else outs, **launch_options)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(outs) and all(g is o for g, o in zip(got, outs)), "the launch did not write into `out`"
    for g, w in zip(got, want):
        assert not (g.isnan() & ~w.isnan()).any(), "the kernel left elements unwritten (NaN, the reference has none)"
    return got, want


def assert_launch_matches_reference(graph, kernel, inputs, *, kind, poison=True, **launch_options):
    """launch_kernel's outputs as the reference's (assert_matches_reference); returns them."""
    got, want = launch_kernel(graph, kernel, inputs, poison, **launch_options)
    assert_matches_reference(got, want, kind=kind)
    return got


def randomize(model, seed=0):
    """Non-trivial weights everywhere (biases and BN statistics are zeros/ones at init)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for w in layer.weights:
            value = rng.normal(size=w.shape) * 0.5
            if w.name == "moving_variance":
                value = np.abs(value) + 0.5
            weights.append(value.astype(w.numpy().dtype))
        layer.set_weights(weights)


def kernels_of(graph):
    return [n for n in graph.nodes if n.op == "kernel"]


def assert_compiled_steps_match_the_reference(make_model, x, y, steps=2, loss="categorical_crossentropy"):
    """Train a fresh make_model() for `steps` batches of (x, y) with Adam on the reference executor
    and on the compiled step under Triton's interpreter: equal losses, accuracies and weights."""
    import math

    tol = tolerance("float32", "long")
    results = []
    for backend in ("reference", "triton-interpret"):
        model = make_model()
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], backend=backend)
        logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(steps)]
        results.append((logs, model.get_weights()))
    (ref_logs, ref_w), (tri_logs, tri_w) = results
    for a, b in zip(ref_logs, tri_logs):
        assert math.isclose(a["loss"], b["loss"], rel_tol=tol["rtol"]) and a["accuracy"] == b["accuracy"], (a, b)
    for a, b in zip(ref_w, tri_w, strict=True):
        np.testing.assert_allclose(a, b, **tol)


def explain_training_build(tmp_path, example: str = "cnn_digits.k") -> list[str]:
    """`kcomp build examples/<example> --train --explain` in a child process (compiling for a GPU):
    the explain lines it prints."""
    import subprocess
    import sys
    from pathlib import Path

    from aot_helpers import compiler_env

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "kcomp", "build", str(root / "examples" / example), "--train", "--explain",
         "--emit", "ir,triton", "-o", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=root, env=compiler_env(KCOMP_CACHE_DIR=str(tmp_path / "cache")), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def matmul_call(a, b, **binding):
    """A rank-2 MatmulCall of A @ B (kernels/matmul.py) with a stand-in binding: a plain product
    unless `binding` sets ids, shift, has_prologue, cast_b, column_sums_dtype or whole_rows. For
    the questions asked of a call before it launches (which configs it tries)."""
    from kcomp.kernels import matmul

    defaults = dict(ids=None, shift=(), has_prologue=False, cast_b="", column_sums_dtype=None, whole_rows=False)
    bind = type("Binding", (), {**defaults, **binding})()
    return matmul.MatmulCall(bind, (a, b), None, a, b, None, None, a.shape[0], b.shape[1], a.shape[1], None,
                             matmul.NOT_BATCHED)


class KernelSpy:
    """Stands in for a template's @triton.jit kernel (monkeypatched onto its module, where the launch
    finds it): records each `kernel[grid](*args, **kwargs)` call's grid and keywords, then runs it."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, []  # launches: (grid, keywords) of each call

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch

    @property
    def grids(self) -> list:
        return [grid for grid, _ in self.launches]
