"""Helpers shared by the kernel tests."""

import numpy as np


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


def assert_same_nonfinite(got, want, rtol=1e-5, atol=1e-6):
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

    results = []
    for backend in ("reference", "triton-interpret"):
        model = make_model()
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"], backend=backend)
        logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(steps)]
        results.append((logs, model.get_weights()))
    (ref_logs, ref_w), (tri_logs, tri_w) = results
    for a, b in zip(ref_logs, tri_logs):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4) and a["accuracy"] == b["accuracy"], (a, b)
    for a, b in zip(ref_w, tri_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


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
