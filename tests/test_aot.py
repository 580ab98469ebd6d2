"""AOT: every generated kernel of the example models compiles for sm_90 with no GPU.

The compiles run in child processes without TRITON_INTERPRET (tests/aot_helpers.py),
in parallel: float32 and bfloat16 builds of every kernel node of examples/*.k at
batch 128, plus a few single checks. Each test reads its kernel's record: PTX for
sm_90a, registers, shared memory within the H100/H200 limit, no register spills,
and tensor-core instructions (HGMMA, Hopper's warpgroup MMA) in every matmul and
conv kernel. Templates without a generator yet are skipped, saying so.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import kcomp.dsl
from aot_helpers import EXAMPLES, assert_ptx_counts_are_sass_counts, example_kernels, start
from kcomp.runtime import aot
from kcomp.codegen.module import kernel_source
from kcomp.errors import KcompError
from kcomp.ir.graph import Value
from kcomp.kernels.registry import TEMPLATES
from kcomp.passes import run_pipeline

# Every case reads the results of AOT child processes that compile all the examples' kernels
# (about a minute on two cores).
pytestmark = pytest.mark.slow

BATCH = 128
DTYPES = ["float32", "bfloat16"]
GEMM_TEMPLATES = tuple(name for name, t in TEMPLATES.items() if t.tensor_cores)  # built on tl.dot: they must use tensor cores
# The recurrences' dots are one batch block (16 to 64 rows) per time step, too few rows for a
# warpgroup's wgmma (HGMMA): mma.sync (HMMA) is their tensor-core instruction.
STEP_DOT_TEMPLATES = ("lstm_scan", "lstm_scan_grad", "lstm_scan_tiled", "lstm_scan_grad_tiled")

# Measured at batch 128 on sm_90 (kernels/ is changing: an entry that passes shows as XPASS).
KNOWN_SPILLS: dict = {}  # (model, kernel, dtype) -> why it spills: none since the conv tile limit with a prologue


def example_cases():
    """(model, kernel index, template) of every kernel node in examples/*.k and their training
    steps ("<model>:train"), known at collection."""
    return [(name, i, node.attrs["template"]) for _, name, i, node in example_kernels(training=True)]


CASES = example_cases()


def params(cases, marks=None):
    out = []
    for name, index, template in cases:
        for dtype in DTYPES if not name.endswith(":train") else ["float32"]:
            reason = (marks or {}).get((name, index, dtype))
            mark = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            out.append(pytest.param(name, index, template, dtype, id=f"{name}-kernel_{index}-{template}-{dtype}", marks=mark))
    return out


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The AOT child processes, all started at once (their results are read when a test needs them)."""
    folder = tmp_path_factory.mktemp("aot")
    env = {"KCOMP_CACHE_DIR": str(folder / "cache")}
    jobs = {dtype: {"kind": "examples", "dtype": dtype, "target": "sm_90", "batch": BATCH} for dtype in DTYPES}
    jobs["checks"] = {"kind": "checks", "folder": str(folder / "artifacts")}
    jobs["nan"] = {"kind": "nan"}
    # Four children compile every example at once beside the test workers (two under `-n auto` on
    # two cores): the limit guards against a hang, not a slow machine.
    return {key: start(job, timeout=900, **env) for key, job in jobs.items()}


def compiled(children, name, index, template, dtype) -> dict:
    (rec,) = [r for r in children[dtype].result() if r["model"] == name and r["index"] == index]
    assert rec["template"] == template
    assert rec["status"] == "compiled", rec.get("error")
    return rec


@pytest.mark.parametrize("name, index, template, dtype", params(CASES))
def test_kernel_compiles_for_sm_90(children, name, index, template, dtype):
    rec = compiled(children, name, index, template, dtype)
    assert rec["ptx_target"] == "sm_90a"
    assert rec["cubin_bytes"] > 0
    assert rec["registers"] > 0
    assert rec["fits_shared"], f"{rec['shared_bytes']} B of shared memory; an H100 block gets at most 232448"
    pointer = {"float32": "*fp32", "bfloat16": "*bf16"}[dtype]
    assert pointer in rec["signature"].values(), rec["signature"]


def test_ptx_counts_are_sass_counts_on_sm_90(children):
    """A build reads tensor cores from the PTX (test_aot_ptx_facts.py): on every example kernel,
    forward and training step, its counts are the SASS's."""
    assert_ptx_counts_are_sass_counts(children["float32"].result(), "sm_90")


@pytest.mark.parametrize("name, index, template, dtype", params([c for c in CASES if c[2] in GEMM_TEMPLATES]))
def test_gemm_kernel_uses_tensor_cores(children, name, index, template, dtype):
    """fp32 through TF32 (precision="tf32", the default) and bf16 directly: HGMMA on sm_90 (HMMA for
    the recurrences' per-step dots)."""
    rec = compiled(children, name, index, template, dtype)
    instruction = "HMMA" if template in STEP_DOT_TEMPLATES else "HGMMA"
    assert rec["tensor_cores"].get(instruction, 0) > 0, rec["tensor_cores"]


@pytest.mark.parametrize("name, index, template, dtype", params(CASES, marks=KNOWN_SPILLS))
def test_kernel_does_not_spill(children, name, index, template, dtype):
    rec = compiled(children, name, index, template, dtype)
    assert (rec["spill_bytes"], rec["local_stores"]) == (0, 0), (
        f"{rec['registers']} registers, {rec['spill_bytes']} B local memory per thread, "
        f"{rec['local_stores']} spill stores; config {rec['constants']}, num_warps={rec['num_warps']}"
    )


# --- single checks (one child) -----------------------------------------------------------------


def test_block_sizes_are_the_gpu_ones(children):
    """Example tensors live on the CPU, but the config compiled is the template's launch's GPU choice."""
    from kcomp.kernels.matmul_configs import candidate_configs

    rec = children["checks"].result()["sm_90_tf32"]
    gpu = candidate_configs(128, 64, 128, interpret=False)[0]  # the checks' Dense: M=128 (batch), N=64, K=128
    assert gpu != candidate_configs(128, 64, 128, interpret=True)[0]
    assert {k: rec["constants"][k] for k in ("BM", "BN", "BK")} == {k: gpu[k] for k in ("BM", "BN", "BK")}
    assert (rec["num_warps"], rec["num_stages"]) == (gpu["num_warps"], gpu["num_stages"])


def test_sm_80_uses_mma_sync(children):
    rec = children["checks"].result()["sm_80"]
    assert rec["ptx_target"] == "sm_80"
    assert rec["tensor_cores"].get("HMMA", 0) > 0 and "HGMMA" not in rec["tensor_cores"]
    assert rec["spill_bytes"] == 0


def test_ieee_precision_keeps_fp32_off_tensor_cores(children):
    checks = children["checks"].result()
    assert checks["sm_90_ieee"]["tensor_cores"] == {}
    assert checks["sm_90_tf32"]["tensor_cores"].get("HGMMA", 0) > 0


def test_specialization_is_triton_jits(children):
    """The signature, constants and alignment attributes are what triton.jit builds at a launch."""
    checks = children["checks"].result()
    assert checks["same_specialization_matmul"]
    assert checks["same_specialization_pointwise"]


def test_pointwise_kernel_compiles(children):
    rec = children["checks"].result()["pointwise"]
    assert rec["function"] == "pointwise_kernel" and rec["ptx_target"] == "sm_90a"
    assert rec["registers"] > 0 and rec["spill_bytes"] == 0 and rec["tensor_cores"] == {}


def test_write_artifacts(children):
    checks = children["checks"].result()
    paths = [Path(p) for p in checks["written"]]
    assert [p.name for p in paths] == ["kernel_0.sm_90.ptx", "kernel_0.sm_90.cubin", "kernel_0.sm_90.json"]
    ptx, cubin, report = paths
    assert ".target sm_90a" in ptx.read_text()
    assert hashlib.sha256(cubin.read_bytes()).hexdigest() == checks["cubin_sha"]
    assert json.loads(report.read_text())["registers"] == checks["sm_90_tf32"]["registers"]
    assert sorted(p.name for p in ptx.parent.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_ptxas_fallback_reads_the_same_registers(children):
    checks = children["checks"].result()
    usage = checks["ptxas_fallback"]
    assert usage["REG"] == checks["sm_90_tf32"]["registers"]
    assert usage["STACK"] == checks["sm_90_tf32"]["stack_bytes"] == 0


# --- in this process (interpreter mode) ----------------------------------------------------------


def _dense_node():
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    graph, _ = run_pipeline(Sequential([Input(shape=(23,)), Dense(19, activation="relu")]).to_graph())
    return next(n for n in graph.nodes if n.op == "kernel")


def test_compiling_in_interpreter_mode_is_refused():
    from kcomp.runtime.triton_mode import interpreting

    if not interpreting():
        pytest.skip("this pytest process does not run Triton in interpreter mode")
    node = _dense_node()
    with pytest.raises(KcompError, match="interpreter mode.*without TRITON_INTERPRET"):
        aot.compile_kernel(kernel_source(node, 0), aot.example_inputs(node, 4))


def test_unknown_target_names_the_known_ones():
    node = _dense_node()
    with pytest.raises(KcompError, match=r"target='sm_75'.*sm_80, sm_89, sm_90"):
        aot.compile_kernel(kernel_source(node, 0), aot.example_inputs(node, 4), target="sm_75")


def test_example_inputs_bind_the_batch_and_other_symbols():
    from kcomp.ir.graph import Graph

    body = Graph("g", (Value(0, ("N", "?0", 8), "float32"), Value(1, ("N", 5), "int32")), (), (), ())
    x, ids = aot.example_inputs(body, batch=128, other=64)
    assert x.shape == (128, 64, 8) and x.dtype == torch.float32
    assert ids.shape == (128, 5) and ids.dtype == torch.int32
    x, ids = aot.example_inputs(body, batch=3, float_dtype="bfloat16")
    assert x.shape == (3, 64, 8) and x.dtype == torch.bfloat16 and ids.dtype == torch.int32
    assert x.float().std() > 0.5  # random, not zeros


def test_example_output_takes_the_float_dtype():
    node = _dense_node()
    assert aot.example_output(node, 7).shape == (7, 19)
    assert aot.example_output(node, 7, float_dtype="bfloat16").dtype == torch.bfloat16


@pytest.mark.parametrize("template", ["reduce", "pointwise", "pool2d", "softmax_xent"])
def test_max_and_min_keep_nan_on_the_gpu(children, template):
    """Triton's maximum / minimum / tl.max compile to PTX max.f32 / min.f32, which return the
    other operand when one is NaN; torch keeps the NaN. The interpreter cannot show this (its
    tl.max is numpy's nanmax), so the PTX is read: every float max / min is the .NaN form."""
    rec = children["nan"].result()[template]
    assert rec["template"] == template
    assert rec["instructions"] and all(".NaN." in i for i in rec["instructions"]), rec["instructions"]
