"""Mixed precision's kernels and build, without Keras (against Keras: tests/test_mixed_precision.py):
the mixed_float16 model's kernels under the interpreter against the reference executor, `kcomp
build --train --dtype bfloat16`, and every example's mixed_bfloat16 kernels compiled for sm_90."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kcomp
from kcomp import mixed_precision

from mixed_precision_helpers import data, mlp


@pytest.fixture(autouse=True)
def float32_policy_after():
    """Each test leaves the global policy as it found it (float32)."""
    yield
    mixed_precision.set_global_policy("float32")


# -- kernels in float16 under the interpreter ------------------------------------------------------
def test_float16_kernels_match_the_reference_executor():
    """The mixed_float16 model's kernels (16-bit loads, float32 accumulation, casts fused as
    prologues) under Triton's interpreter against the reference executor: predictions, and four
    loss-scaled training steps (applied; skipped: its targets of 1e8 overflow float16 gradients;
    applied; applied, doubling the scale) leave the same scale, count and weights. bfloat16 is not
    checked here: the interpreter's bfloat16 arithmetic is wrong (DESIGN.md)."""
    x, labels = data(19)
    y = np.eye(5, dtype="float32")[labels]
    runs = {}
    for backend in ("reference", "triton-interpret"):
        model = mlp(kcomp, "mixed_float16")
        if backend == "triton-interpret":
            model.set_weights(runs["reference"][0])
        model.compile(kcomp.optimizers.LossScaleOptimizer(kcomp.optimizers.Adam(0.01), 64.0, 2), "mse", backend=backend)
        initial = model.get_weights()
        predicted = model.predict(x, verbose=0)
        losses, states = [], []
        for targets in (y, y * 1e8, y, y):
            losses.append(model.train_on_batch(x, targets))
            opt = model.optimizer
            states.append((float(opt.dynamic_scale), float(opt.step_counter), opt.iterations))
        runs[backend] = (initial, predicted, losses, model.get_weights(), states)
    ref, tri = runs["reference"], runs["triton-interpret"]
    np.testing.assert_allclose(tri[1], ref[1], rtol=2e-3, atol=2e-3)  # float16: 11 bits of mantissa
    np.testing.assert_allclose(tri[2], ref[2], rtol=2e-3)
    assert tri[4] == ref[4] == [(64.0, 1, 1), (32.0, 0, 1), (32.0, 1, 2), (64.0, 0, 3)]
    for a, b in zip(tri[3], ref[3]):
        np.testing.assert_allclose(a, b, rtol=5e-3, atol=5e-3)


# -- the build: the 16-bit training step ---------------------------------------------------------
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_kcomp(*args):
    """The command line as a user runs it: a subprocess without the interpreter mode of this one."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "kcomp", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_build_train_in_bfloat16_reports_the_mixed_step(tmp_path):
    """`kcomp build --train --dtype bfloat16` builds Keras's 16-bit training step (the
    mixed_bfloat16 policy: bfloat16 matmuls, float32 weights, slots and updates) and says so."""
    out = tmp_path / "out"
    result = run_kcomp("build", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--train", "--dtype", "bfloat16",
                       "-o", out, "--emit", "ir")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["policy"] == "mixed_bfloat16" and report["graph"] == "training step"
    assert "policy mixed_bfloat16" in result.stdout
    graph = (out / "ir" / "00-input.ir").read_text()
    assert "matmul(" in graph and all(": bf16[" in line for line in graph.splitlines() if "= matmul(" in line)
    assert "param %dense/kernel: f32[" in graph and "param frozen %optimizer/dense/kernel/0: f32[" in graph
    result = run_kcomp("build", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--train", "--policy",
                       "mixed_float16", "-o", tmp_path / "f16", "--emit", "ir")
    assert result.returncode == 0, result.stderr
    graph = (tmp_path / "f16" / "ir" / "00-input.ir").read_text()
    assert "is_finite(" in graph and "param frozen %optimizer/dynamic_scale: f32[]" in graph  # the loss scaling
    bad = run_kcomp("build", EXAMPLES / "mlp_digits.k", "--policy", "mixed_float8", "-o", tmp_path / "bad")
    assert bad.returncode != 0 and "mixed_bfloat16" in bad.stderr


def _compiled_without_spills_and_their_gemms(records) -> list[dict]:
    """Every kernel's record says compiled and no spill (bytes and local stores); returns the
    records of the GEMM templates (those meant for tensor cores)."""
    from kcomp.kernels.registry import TEMPLATES

    failed = [r for r in records if r["status"] != "compiled"]
    assert not failed, failed[:3]
    spilled = [(r["model"], r["index"], r["template"], r["spill_bytes"]) for r in records
               if (r["spill_bytes"], r["local_stores"]) != (0, 0)]
    assert not spilled, spilled
    return [r for r in records if TEMPLATES[r["template"]].tensor_cores]


@pytest.mark.slow
def test_every_kernel_of_the_examples_mixed_step_compiles_for_sm_90_without_spills(tmp_path):
    """Every kernel of every example's forward and training step under mixed_bfloat16, compiled
    for sm_90 (no GPU needed): compiled, 16-bit operands where the IR has them, no spills, and the
    GEMM templates on Hopper's tensor cores (HGMMA; HMMA for the recurrences' per-step dots)."""
    from aot_helpers import start

    records = start({"kind": "policy", "policy": "mixed_bfloat16", "target": "sm_90", "batch": 128}, timeout=1500,
                    KCOMP_CACHE_DIR=str(tmp_path / "cache")).result()
    steps = {r["model"] for r in records if r["model"].endswith(":train")}
    assert steps >= {"mlp_digits:train", "cnn_digits:train"}, steps
    gemm = _compiled_without_spills_and_their_gemms(records)
    step_dots = ("lstm_scan", "lstm_scan_grad", "lstm_scan_tiled", "lstm_scan_grad_tiled")
    no_tensor_cores = [(r["model"], r["index"], r["template"]) for r in gemm
                       if not r["tensor_cores"].get("HMMA" if r["template"] in step_dots else "HGMMA")]
    assert not no_tensor_cores, no_tensor_cores
    assert any("*bf16" in r["signature"].values() for r in gemm)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sm_80", "sm_89"])
def test_the_mixed_training_steps_compile_for_ampere_and_ada_without_spills_on_tensor_cores(tmp_path, target):
    """The MLP's and the CNN's mixed_bfloat16 training steps compiled for sm_80 (A100) and sm_89
    (L4, RTX 40): every kernel compiled, none spills, the GEMM templates on mma.sync (HMMA) with
    bfloat16 operands (Hopper's wgmma is sm_90's: the test above)."""
    from aot_helpers import start

    models = ["mlp_digits:train", "cnn_digits:train"]
    records = start({"kind": "policy", "policy": "mixed_bfloat16", "target": target, "batch": 128, "models": models},
                    timeout=900, KCOMP_CACHE_DIR=str(tmp_path / "cache")).result()
    assert {r["model"] for r in records} == set(models)
    gemm = _compiled_without_spills_and_their_gemms(records)
    assert gemm and not [(r["model"], r["index"]) for r in gemm if not r["tensor_cores"].get("HMMA")], gemm
    assert any("*bf16" in r["signature"].values() for r in gemm)
