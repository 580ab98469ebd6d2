"""KMAJOR configs: float32 operands copied K-major before the launch, for TF32's tensor cores.

The matmul template's (kernels/matmul_configs.py): which calls try them, the copies they make,
and their results under Triton's interpreter (the forward, input-gradient and weight-gradient
products of a Dense, on matmul_kernel and on the TMA kernel); their compile for sm_90 is checked
in tests/test_matmul_large_tiles.py. The conv2d template's (a K-major copy of the kernel): which
calls try them, a conv + pool forward and training step under the interpreter, and their compile
for sm_90 here. On a GPU tests/test_gpu.py runs the matmul's."""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.kernels import conv2d, matmul, matmul_configs
from kcomp.kernels.matmul_configs import KMAJOR_CONFIGS, KMAJOR_TMA_CONFIGS, k_major_copies
from kernel_helpers import matmul_call

SMALL = dict(BM=32, BN=32, BK=16)  # the interpreter runs blocks whole: several tiles at these sizes


def _k_major_offered(call) -> bool:
    return any(c.get("KMAJOR") for c in matmul_configs.matmul_candidates(call, interpret=False))


def test_large_float32_products_with_an_operand_across_k_try_k_major_copies():
    x, w = torch.randn(2048, 512), torch.randn(512, 2048)
    assert _k_major_offered(matmul_call(x, w))  # a Dense's forward: W (K, N) row-major
    assert _k_major_offered(matmul_call(w.t(), x.t().contiguous()[:, :2048]))  # a weight gradient's x^T: A column-major
    assert not _k_major_offered(matmul_call(x, w.t().contiguous().t()))  # both K-major already (an input gradient's W^T)
    assert not _k_major_offered(matmul_call(x.bfloat16(), w.bfloat16()))  # 16-bit: wgmma takes either layout
    assert not _k_major_offered(matmul_call(x, w, cast_b="bfloat16"))  # a cast B is multiplied in 16 bits
    assert not _k_major_offered(matmul_call(x[:64], w[:, :64]))  # small: not worth a compile
    calls = [matmul_call(x, w), matmul_call(x[:64], w[:, :64])]
    assert not any(c.get("KMAJOR") for call in calls for c in matmul_configs.matmul_candidates(call, interpret=True))
    # Off a GPU with a TMA the TMA forms are not offered.
    assert not any(c.get("TMA") for c in matmul_configs.matmul_candidates(matmul_call(x, w), interpret=False))


def test_the_copies_keep_the_values_and_run_along_k():
    a, b = torch.randn(40, 24), torch.randn(24, 30)
    for a_in, b_in in [(a, b), (a.t().contiguous().t(), b), (a, b.t().contiguous().t())]:
        a_out, b_out = k_major_copies(a_in, b_in)
        assert torch.equal(a_out, a) and torch.equal(b_out, b)
        assert a_out.stride(-1) == 1 and b_out.stride(-2) == 1
        assert (a_out is a_in) == (a_in.stride(-1) == 1) and (b_out is b_in) == (b_in.stride(-2) == 1)  # copied only if needed


def _dense_gradient_graph(bias_gradient: bool):
    """A Dense's three products in one graph: y = relu(x @ w + bias), dx = dz @ w^T, and
    dw = x^T @ dz, with bias_gradient the bias's, sum(dz, 0) (which the kernel of dw computes)."""
    b = GraphBuilder("dense_products")
    x, w, bias, dz = (b.input(("N", 36), "float32", "x"), b.input((36, 44), "float32", "w"),
                      b.input((44,), "float32", "bias"), b.input(("N", 44), "float32", "dz"))
    y = b.emit1("relu", [b.emit1("bias_add", [b.emit1("matmul", [x, w]), bias])], max_value=None, negative_slope=0.0,
                threshold=0.0)
    dx = b.emit1("matmul", [dz, b.emit1("transpose", [w], perm=(1, 0))])
    dw = b.emit1("matmul", [b.emit1("transpose", [x], perm=(1, 0)), dz])
    sums = [b.emit1("sum", [dz], axes=(0,), keepdims=False)] if bias_gradient else []
    return b.finish([y, dx, dw, *sums])


@pytest.mark.parametrize("config", [KMAJOR_CONFIGS[0], KMAJOR_TMA_CONFIGS[0]], ids=["kernel", "tma"])
def test_a_dense_forward_and_gradients_on_k_major_copies_match_the_reference(monkeypatch, config):
    """matmul_kernel with the bias gradient's column sums; the TMA kernel (plain products only)
    without, at a batch of 72 rows, whose copies' rows (x^T: 288 bytes) a descriptor takes."""
    from kernel_helpers import assert_compiled_matches_reference

    monkeypatch.setattr(matmul_configs, "candidate_configs", lambda *args, **kwargs: [dict(config, **SMALL)])
    copied = []
    monkeypatch.setattr(matmul, "k_major_copies", lambda a, b, real=k_major_copies: copied.append(1) or real(a, b))
    launched_tma = []
    monkeypatch.setattr(matmul, "run_tma", lambda *args, real=matmul.run_tma: launched_tma.append(1) or real(*args))
    tma = bool(config.get("TMA"))
    graph, rows = _dense_gradient_graph(bias_gradient=not tma), 72 if tma else 70
    gen = torch.Generator().manual_seed(5)
    inputs = [torch.randn(rows, 36, generator=gen), torch.randn(36, 44, generator=gen), torch.randn(44, generator=gen),
              torch.randn(rows, 44, generator=gen)]
    compared = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    templates = [n.attrs["template"] for n in compared.fused.nodes if n.op == "kernel"]
    assert templates.count("matmul") == 3, templates
    assert len(copied) == 3 and len(launched_tma) == (3 if tma else 0)


def _conv_call(x_dtype=torch.float32, w_dtype=torch.float32, cast_w=""):
    bind = type("Binding", (), dict(pool="max", has_prologue=False, prepool_dtype=None, cast_w=cast_w))()
    return type("Call", (), dict(binding=bind, x=torch.zeros(1, dtype=x_dtype), w=torch.zeros(1, dtype=w_dtype),
                                 M=128 * 13 * 13, F=64, K=288))()


def test_float32_convs_try_a_k_major_copy_of_their_kernel():
    tried = conv2d.conv_candidates(_conv_call(), interpret=False)
    k_major = [c for c in tried if c.get("KMAJOR")]
    assert len(k_major) == conv2d.KMAJOR_TILES and [dict(c, KMAJOR=True) for c in tried[:conv2d.KMAJOR_TILES]] == k_major
    for call in (_conv_call(torch.bfloat16, torch.bfloat16), _conv_call(w_dtype=torch.float32, cast_w="bfloat16")):
        assert not any(c.get("KMAJOR") for c in conv2d.conv_candidates(call, interpret=False))
    assert not any(c.get("KMAJOR") for c in conv2d.conv_candidates(_conv_call(), interpret=True))


@pytest.mark.parametrize("kind", ["forward", "training"])
def test_a_conv_and_pool_on_a_k_major_kernel_match_the_reference(monkeypatch, kind):
    """Conv2D + ReLU + max-pool with its kernel read K-major: the forward, and a training step (the
    forward storing its pre-pool activation beside the pooled one)."""
    import numpy as np

    import kcomp
    from kernel_helpers import KernelSpy, assert_compiled_matches_reference, randomize

    k_major = dict(conv2d.INTERPRETER_CONFIG, KMAJOR=True)
    monkeypatch.setattr(conv2d, "candidate_configs", lambda *args, **kwargs: [k_major])
    spy = KernelSpy(conv2d.conv2d_kernel)
    monkeypatch.setattr(conv2d, "conv2d_kernel", spy)
    model = kcomp.Sequential([kcomp.Input((9, 11, 5)), kcomp.layers.Conv2D(6, 3, activation="relu"),
                              kcomp.layers.MaxPooling2D(), kcomp.layers.Flatten(), kcomp.layers.Dense(3)])
    randomize(model)
    x = torch.randn(7, 9, 11, 5, generator=torch.Generator().manual_seed(3))
    if kind == "forward":
        assert_compiled_matches_reference(model, [x], kind="accumulating", precision="ieee")
    else:
        model.compile(optimizer="sgd", loss="mse", backend="triton-interpret")
        want = kcomp.Sequential.from_config(model.get_config())
        want.compile(optimizer="sgd", loss="mse", backend="reference")
        want.set_weights(model.get_weights())
        y = np.random.default_rng(4).standard_normal((7, 3)).astype("float32")
        for m in (model, want):
            m.train_on_batch(x.numpy(), y)
        for got, expected in zip(model.get_weights(), want.get_weights(), strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert spy.launches and all(kw["W_KMAJOR"] for _, kw in spy.launches)


def compile_cases(cases) -> list[dict]:
    """The AOT child's job: the CNN's second Conv2D + ReLU + max-pool (batch 128, 13x13x32 -> 64
    filters) compiled for sm_90 in float32 with its first KMAJOR_TILES tiles, each on the kernel as
    it is and K-major, with the PTX's cp.async copies counted."""
    import re

    from kcomp.codegen.module import kernel_source
    from kcomp.passes import run_pipeline
    from kcomp.runtime.aot import compile_kernel

    import kcomp

    model = kcomp.Sequential([kcomp.Input((13, 13, 32)), kcomp.layers.Conv2D(64, 3, activation="relu"),
                              kcomp.layers.MaxPooling2D()])
    fused, _ = run_pipeline(model.to_graph())
    (node,) = [n for n in fused.nodes if n.op == "kernel"]
    inputs = [torch.zeros(128, 13, 13, 32), torch.zeros(3, 3, 32, 64), torch.zeros(64)]
    records = []
    for config in cases:
        result = compile_kernel(kernel_source(node, 0), inputs, target="sm_90", precision="tf32", config=config)
        ptx = result.ptx.decode() if isinstance(result.ptx, bytes) else result.ptx
        records.append({"config": config, "fits": result.fits_shared, "spill_bytes": result.spill_bytes,
                        "local_stores": result.local_stores(), "hgmma": result.tensor_core_counts().get("HGMMA", 0),
                        "cp_async": len(re.findall(r"cp\.async\.c[ag]", ptx))})
    return records


@pytest.mark.slow
def test_k_major_conv_tiles_compile_for_sm_90_with_fewer_copies(tmp_path):
    from aot_helpers import run_file_as_aot_child

    tiles = conv2d.candidate_configs(128 * 5 * 5, 64, 288, False, pool=True)[:conv2d.KMAJOR_TILES]
    records = run_file_as_aot_child(__file__, tiles + [dict(c, KMAJOR=True) for c in tiles], tmp_path, timeout=300)
    for rec in records:
        assert rec["fits"] and rec["hgmma"] > 0 and rec["spill_bytes"] == 0 and rec["local_stores"] == 0, rec
    for row_major, k_major in zip(records[:len(tiles)], records[len(tiles):]):
        assert k_major["cp_async"] < row_major["cp_async"], (row_major, k_major)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
