"""The matmul template's KMAJOR configs (kernels/matmul_configs.py): which calls try them, the
copies they make, and their results under Triton's interpreter (the forward, input-gradient and
weight-gradient products of a Dense, on matmul_kernel and on the TMA kernel). Their compile for
sm_90 is checked in tests/test_matmul_large_tiles.py; on a GPU tests/test_gpu.py runs them."""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.kernels import matmul, matmul_configs
from kcomp.kernels.matmul_configs import KMAJOR_CONFIGS, KMAJOR_TMA_CONFIGS, k_major_copies

SMALL = dict(BM=32, BN=32, BK=16)  # the interpreter runs blocks whole: several tiles at these sizes


def _call(a, b, **binding):
    defaults = dict(ids=None, shift=(), has_prologue=False, cast_b="", column_sums_dtype=None, whole_rows=False)
    bind = type("Binding", (), {**defaults, **binding})()
    return matmul.MatmulCall(bind, (a, b), None, a, b, None, None, a.shape[0], b.shape[1], a.shape[1], None,
                             matmul.NOT_BATCHED)


def _k_major_offered(call) -> bool:
    return any(c.get("KMAJOR") for c in matmul_configs.matmul_candidates(call, interpret=False))


def test_large_float32_products_with_an_operand_across_k_try_k_major_copies():
    x, w = torch.randn(2048, 512), torch.randn(512, 2048)
    assert _k_major_offered(_call(x, w))  # a Dense's forward: W (K, N) row-major
    assert _k_major_offered(_call(w.t(), x.t().contiguous()[:, :2048]))  # a weight gradient's x^T: A column-major
    assert not _k_major_offered(_call(x, w.t().contiguous().t()))  # both K-major already (an input gradient's W^T)
    assert not _k_major_offered(_call(x.bfloat16(), w.bfloat16()))  # 16-bit: wgmma takes either layout
    assert not _k_major_offered(_call(x, w, cast_b="bfloat16"))  # a cast B is multiplied in 16 bits
    assert not _k_major_offered(_call(x[:64], w[:, :64]))  # small: not worth a compile
    calls = [_call(x, w), _call(x[:64], w[:, :64])]
    assert not any(c.get("KMAJOR") for call in calls for c in matmul_configs.matmul_candidates(call, interpret=True))
    # Off a GPU with a TMA the TMA forms are not offered.
    assert not any(c.get("TMA") for c in matmul_configs.matmul_candidates(_call(x, w), interpret=False))


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
