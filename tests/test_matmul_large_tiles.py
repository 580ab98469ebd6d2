"""The matmul template's large tiles: tried only for large products, and each one compiles for
sm_90 on tensor cores without spills where its shared memory fits (checked without a GPU); so do
the TMA kernel's tiles (TMA_CONFIGS), whose A and B loads are TMA copies only, and in float32 the
tiles on K-major copies (KMAJOR_CONFIGS, KMAJOR_TMA_CONFIGS), which move B with fewer copies into
shared memory than the same tiles on a row-major B."""

import pytest

from kcomp.kernels.matmul_configs import (GPU_CONFIGS, KMAJOR_CONFIGS, KMAJOR_TMA_CONFIGS, LARGE_CONFIGS, TMA_CONFIGS,
                                          candidate_configs)


def test_large_tiles_are_candidates_of_large_products_only():
    assert candidate_configs(4096, 4096, 4096, interpret=False) == GPU_CONFIGS + LARGE_CONFIGS
    assert candidate_configs(2048, 2048, 512, interpret=False)[-len(LARGE_CONFIGS):] == LARGE_CONFIGS
    # A Keras-sized Dense and a thin K keep the small tiles (and their compile time).
    for m, n, k in [(128, 512, 784), (1024, 1024, 1024), (4096, 4096, 256)]:
        assert not any(c in LARGE_CONFIGS for c in candidate_configs(m, n, k, interpret=False)), (m, n, k)
    assert candidate_configs(4096, 4096, 4096, interpret=True) != GPU_CONFIGS + LARGE_CONFIGS  # the interpreter runs one
    # AOT builds compile the first candidate: a large product's is still the first of the usual tiles.
    assert candidate_configs(8192, 8192, 8192, interpret=False)[0] == GPU_CONFIGS[0]


def compile_cases(dtypes) -> list[dict]:
    """The AOT child's job: a 4096x4096x4096 Dense+relu compiled for sm_90 with every large tile
    and every TMA tile (float32: and every K-major one), with the PTX's TMA copies, (per-thread)
    cp.async copies and shared-memory stores counted."""
    import re

    import torch

    from kcomp.codegen.module import kernel_source
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential
    from kcomp.passes import run_pipeline
    from kcomp.runtime.aot import compile_kernel

    records = []
    for dtype in dtypes:
        model = Sequential([Input(shape=(4096,), dtype=dtype), Dense(4096, activation="relu", dtype=dtype)])
        fused, _ = run_pipeline(model.to_graph())
        (node,) = [n for n in fused.nodes if n.op == "kernel"]
        t = getattr(torch, dtype)
        inputs = [torch.zeros(4096, 4096, dtype=t), torch.zeros(4096, 4096, dtype=t), torch.zeros(4096, dtype=t)]
        for config in LARGE_CONFIGS + TMA_CONFIGS + (KMAJOR_CONFIGS + KMAJOR_TMA_CONFIGS if dtype == "float32" else []):
            result = compile_kernel(kernel_source(node, 0), inputs, target="sm_90", config=config,
                                    out=torch.empty(4096, 4096, dtype=t))
            ptx = result.ptx.decode() if isinstance(result.ptx, bytes) else result.ptx
            records.append({"dtype": dtype, "config": config, "fits": result.fits_shared, "spill_bytes": result.spill_bytes,
                            "local_stores": result.local_stores(), "hgmma": result.tensor_core_counts().get("HGMMA", 0),
                            "tma_loads": len(re.findall(r"cp\.async\.bulk\.tensor", ptx)),
                            "cp_async": len(re.findall(r"cp\.async\.c[ag]", ptx)),
                            "st_shared": len(re.findall(r"st\.shared", ptx))})
    return records


@pytest.mark.slow
def test_large_tiles_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, ["bfloat16", "float32"], tmp_path, timeout=600)
    assert len(records) == 2 * (len(LARGE_CONFIGS) + len(TMA_CONFIGS)) + len(KMAJOR_CONFIGS) + len(KMAJOR_TMA_CONFIGS)
    for rec in records:
        assert rec["hgmma"] > 0 and rec["spill_bytes"] == 0 and rec["local_stores"] == 0, rec
        tma = rec["config"].get("TMA", False)
        assert (rec["tma_loads"] > 0, rec["cp_async"] == 0) == (tma, tma), rec  # the TMA tiles load by TMA only
    # Every tile fits in 16-bit; in float32 at least one of each kind does (autotuning skips the others).
    assert all(r["fits"] for r in records if r["dtype"] == "bfloat16")
    for tma in (False, True):
        assert any(r["fits"] for r in records if r["dtype"] == "float32" and r["config"].get("TMA", False) == tma)
    # K-major float32: every tile fits. B's rows copied 16 bytes at a time (fewer cp.async than any
    # row-major tile's), and the TMA kernel's B not transposed through shared memory (fewer st.shared
    # than the same tile on a row-major B).
    k_major = [r for r in records if r["config"].get("KMAJOR")]
    assert k_major and all(r["fits"] for r in k_major)
    row_major = [r for r in records if r["dtype"] == "float32" and not r["config"].get("KMAJOR")]
    assert max(r["cp_async"] for r in k_major if not r["config"].get("TMA")) < min(
        r["cp_async"] for r in row_major if not r["config"].get("TMA"))
    (tma_k_major,) = [r for r in k_major if r["config"].get("TMA")]
    (same_tile,) = [r for r in row_major if r["config"] == {k: v for k, v in tma_k_major["config"].items() if k != "KMAJOR"}]
    assert tma_k_major["st_shared"] < same_tile["st_shared"], (tma_k_major, same_tile)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
