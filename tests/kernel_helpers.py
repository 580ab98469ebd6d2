"""Helpers shared by the kernel tests."""

import numpy as np


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
