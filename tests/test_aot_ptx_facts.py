"""Tensor cores read from the PTX, not the SASS (issue 17 part 9: a cold build's disassembly).

A build counts tensor-core instructions in the PTX, under the SASS opcodes they become
(kcomp/runtime/aot/results.py), and disassembles the cubins only for `--emit sass`. Here: the
PTX reading on hand-written instructions; on every kernel of the example models (their forward
graphs in bfloat16 for sm_80's warp MMA; sm_90 in float32, training steps too, in test_aot.py), the
counts read from the PTX are the SASS's, opcode by opcode; and what `kcomp build --emit sass` adds to
the files, the report and the cache.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aot_helpers import assert_ptx_counts_are_sass_counts, start
from kcomp.runtime.aot.results import ptx_tensor_core_counts

THREE = "model three {\n  input(16)\n  dense(12, activation=relu)\n  dense(8, activation=relu)\n  dense(4)\n}\n"


@pytest.mark.parametrize("line, opcode", [
    ("wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {%f1}, %rd1, %rd2, p, 1, 1;", "HGMMA"),
    ("wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%f1}, %rd1, %rd2, p, 1, 1, 0, 1;", "HGMMA"),
    ("wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 {%r1}, %rd1, %rd2, p;", "IGMMA"),
    ("wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e5m2 {%f1}, %rd1, %rd2, p, 1, 1;", "QGMMA"),
    ("wgmma.mma_async.sp.sync.aligned.m64n64k32.f32.f16.f16 {%f1}, %rd1, %rd2, %r1, 0, p, 1, 1, 0, 0;", "HGMMA"),
    ("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1}, {%r1}, {%r2}, {%f2};", "HMMA"),
    ("@%p7 mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};", "HMMA"),
    ("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16 {%r1}, {%r2}, {%r3}, {%r4};", "HMMA"),
    ("mma.sync.aligned.m16n8k32.row.col.s32.s8.u8.s32 {%r1}, {%r2}, {%r3}, {%r4};", "IMMA"),
    ("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%f1}, {%r2}, {%r3}, {%f4};", "QMMA"),
    ("mma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 {%fd1}, {%fd2}, {%fd3}, {%fd4};", "DMMA"),
])
def test_a_ptx_mma_is_counted_as_the_sass_opcode_it_becomes(line, opcode):
    ptx = f".target sm_90a\n\tld.global.f32 %f9, [%rd4];\n\t{line}\n\t{line}\n\tst.global.f32 [%rd5], %f9;\n"
    assert ptx_tensor_core_counts(ptx) == {opcode: 2}


def test_fences_waits_and_other_instructions_are_not_tensor_core_work():
    ptx = """
	wgmma.fence.sync.aligned;
	wgmma.commit_group.sync.aligned;
	wgmma.wait_group.sync.aligned 0;
	fma.rn.f32 %f3, %f1, %f2, %f3;
	ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%r1, %r2, %r3, %r4}, [%r5];
	// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 in a comment
"""
    assert ptx_tensor_core_counts(ptx) == {}


def test_an_mma_of_operand_types_unknown_here_is_counted_by_its_own_name():
    ptx = "\tmma.sync.aligned.m8n8k128.row.col.s32.x9.x9.s32 {%r1}, {%r2}, {%r3}, {%r4};\n"
    assert ptx_tensor_core_counts(ptx) == {"mma": 1}


@pytest.mark.slow
def test_the_ptx_counts_are_the_sass_counts_on_every_example_kernel_for_sm_80_in_bfloat16(tmp_path):
    """sm_80's warp MMA (HMMA) on 16-bit operands. sm_90 in float32 is checked in test_aot.py
    (test_ptx_counts_are_sass_counts_on_sm_90) on the compiles it makes anyway: compiling every
    example for it here too cost 100 s of the suite's time (measured)."""
    job = {"kind": "examples", "dtype": "bfloat16", "target": "sm_80", "batch": 128}
    assert_ptx_counts_are_sass_counts(start(job, timeout=900, KCOMP_CACHE_DIR=str(tmp_path / "cache")).result(), "sm_80")


def _build(tmp_path, out: str, *args):
    model = tmp_path / "three.k"
    model.write_text(THREE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["KCOMP_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, "-m", "kcomp", "build", str(model), "-o", str(tmp_path / out), "--batch", "32",
                             "--no-trial", "--jobs", "1", *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads((tmp_path / out / "report.json").read_text()), result.stdout


@pytest.mark.slow
def test_build_disassembles_only_for_emit_sass(tmp_path):
    plain, text = _build(tmp_path, "plain", "--emit", "ptx,cubin")
    assert plain["aot"]["compiled"] == 3 and "tensor cores (PTX)" in text and "tensor cores (SASS)" not in text
    assert not list((tmp_path / "plain" / "kernels").glob("*.sass"))
    assert not list((tmp_path / "cache").rglob("*.sass"))
    for k in plain["kernels"]:
        assert "sass_tensor_cores" not in k and "local_stores" not in k
        assert k["tensor_cores"].get("HGMMA", 0) > 0  # three matmuls, on Hopper's warpgroup MMA

    # The cache holds no SASS yet: --emit sass compiles again, and writes the SASS there too.
    sass, text = _build(tmp_path, "sass", "--emit", "sass")
    assert sass["aot"] == {"target": "sm_90", "compiled": 3, "cache_hits": 0, "same_code": 0} and "tensor cores (SASS)" in text
    kernels = tmp_path / "sass" / "kernels"
    assert sorted(p.name for p in kernels.iterdir()) == [f"kernel_{i}.sm_90.sass" for i in range(3)]
    for k, before in zip(sass["kernels"], plain["kernels"]):
        assert k["sass_tensor_cores"] == k["tensor_cores"] == before["tensor_cores"] and k["local_stores"] == 0
        disassembly = (kernels / f"{k['name']}.sm_90.sass").read_text()
        assert disassembly.count("HGMMA") >= k["sass_tensor_cores"]["HGMMA"] and "Function : matmul_kernel" in disassembly

    # Both builds now hit the cache, and each reports what it reported cold.
    again, _ = _build(tmp_path, "again", "--emit", "sass")
    plain_again, _ = _build(tmp_path, "plain_again", "--emit", "ptx,cubin")
    assert again["aot"]["cache_hits"] == plain_again["aot"]["cache_hits"] == 3
    assert again["kernels"] == [{**k, "cache_hit": True} for k in sass["kernels"]]
    assert plain_again["kernels"] == [{**k, "cache_hit": True} for k in plain["kernels"]]
    assert (Path(tmp_path / "again" / "kernels" / "kernel_0.sm_90.sass").read_bytes()
            == (kernels / "kernel_0.sm_90.sass").read_bytes())
