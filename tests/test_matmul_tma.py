"""The matmul template's TMA kernel (matmul_tma_kernel): which calls may take it, its results under
Triton's interpreter against float64 at ragged sizes (the descriptors' zero fill at every edge).
Its compile for sm_90 is checked with the large tiles' (tests/test_matmul_large_tiles.py); on a GPU
tests/test_gpu.py runs it."""

import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.kernels import matmul, matmul_configs
from kcomp.kernels.matmul_configs import TMA_CONFIGS
from kcomp.layers import Add, Dense, Input
from kcomp.models import Model, Sequential
from kcomp.passes import run_pipeline
from kcomp.runtime.kernel_cache import load_kernel
from kernel_helpers import matmul_call

# The interpreter runs the kernel's blocks whole: small tiles keep it quick and put several tiles
# (and so several turns of each program's persistent loop) in these sizes.
SMALL_TMA = dict(TMA_CONFIGS[0], BM=32, BN=32, BK=16)


def dense_module(model):
    fused, _ = run_pipeline(model.to_graph())
    (node,) = [n for n in fused.nodes if n.op == "kernel"]
    assert node.attrs["template"] == "matmul"
    return load_kernel(kernel_source(node, 0))


@pytest.mark.parametrize("dtype, m, k, n", [("float16", 100, 72, 88), ("float32", 70, 36, 44), ("float32", 129, 20, 68)])
def test_tma_kernel_matches_float64_with_bias_and_activation(dtype, m, k, n):
    module = dense_module(Sequential([Input(shape=(k,), dtype=dtype), Dense(n, activation="gelu", dtype=dtype)]))
    t = getattr(torch, dtype)
    x, w, b = torch.randn(m, k, dtype=t), torch.randn(k, n, dtype=t), torch.randn(n, dtype=t)
    got = module.launch(x, w, b, config=SMALL_TMA, precision="ieee")
    want = torch.nn.functional.gelu(x.double() @ w.double() + b.double())
    tol = 2e-2 if dtype == "float16" else 1e-4
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_a_model_forward_on_the_tma_kernel_matches_the_reference(monkeypatch):
    """Every matmul of a Dense + residual model's fused forward on the TMA kernel (the interpreter's
    one candidate made the TMA tile): the residual is an epilogue operand of C's shape."""
    from kernel_helpers import assert_compiled_matches_reference, randomize

    monkeypatch.setattr(matmul_configs, "candidate_configs", lambda *args, **kwargs: [SMALL_TMA])
    launched = []
    monkeypatch.setattr(matmul, "run_tma", lambda *args, real=matmul.run_tma: launched.append(1) or real(*args))
    inp, skip = Input(shape=(24,)), Input(shape=(40,))
    model = Model([inp, skip], Add()([Dense(40, activation="relu")(inp), skip]))
    randomize(model)
    assert_compiled_matches_reference(model, [torch.randn(53, 24), torch.randn(53, 40)], kind="accumulating",
                                      precision="ieee")
    assert launched


def test_a_column_major_b_is_read_through_a_descriptor_of_its_transpose():
    """B (K, N) column-major (a weight's transpose, as a Dense's input gradient reads it): B_KMAJOR."""
    module = dense_module(Sequential([Input(shape=(36,)), Dense(44, activation="gelu")]))
    x, w, b = torch.randn(70, 36), torch.randn(44, 36).t(), torch.randn(44)
    got = module.launch(x, w, b, config=SMALL_TMA, precision="ieee")
    torch.testing.assert_close(got.double(), torch.nn.functional.gelu(x.double() @ w.double() + b.double()),
                               rtol=1e-4, atol=1e-4)


def test_a_tma_config_for_a_product_it_cannot_compute_is_refused():
    module = dense_module(Sequential([Input(shape=(23,)), Dense(40)]))
    w = torch.randn(40, 23).t()  # column-major with rows of 92 bytes: not a TMA descriptor's layout
    with pytest.raises(ValueError, match="TMA config for a product the TMA kernel cannot compute"):
        module.launch(torch.randn(8, 23), w, torch.randn(40), config=SMALL_TMA)


def test_only_plain_aligned_products_are_tma_ready():
    a, b = torch.randn(64, 48), torch.randn(48, 32)
    assert matmul_configs.plain_and_aligned(matmul_call(a, b))
    assert matmul_configs.plain_and_aligned(matmul_call(a, b.t().contiguous().t()))  # B column-major: B^T's rows are aligned
    assert not matmul_configs.plain_and_aligned(matmul_call(a.t().contiguous().t(), b))  # A column-major: the kernel reads A's rows
    assert not matmul_configs.plain_and_aligned(matmul_call(torch.randn(64, 48)[:, :46], torch.randn(32, 46).t()))  # B^T's rows: 184 bytes
    assert not matmul_configs.plain_and_aligned(matmul_call(a, torch.randn(48, 64)[:, ::2]))  # every other column: rows aligned, stride 2
    assert not matmul_configs.plain_and_aligned(matmul_call(torch.randn(64, 50)[:, :46], torch.randn(46, 32)))  # rows of 200 bytes
    assert not matmul_configs.plain_and_aligned(matmul_call(torch.randn(64 * 48 + 1)[1:].view(64, 48), b))  # A starts 4 bytes past 16
    assert not matmul_configs.plain_and_aligned(matmul_call(a, b.half()))  # two dtypes
    for binding in ({"has_prologue": True}, {"cast_b": "bfloat16"}, {"column_sums_dtype": torch.float32}, {"shift": (0, 4, 1)}):
        assert not matmul_configs.plain_and_aligned(matmul_call(a, b, **binding)), binding
    # On the CPU (the interpreter) the TMA tiles are never candidates: they are a GPU's to time.
    big = matmul_call(torch.randn(2048, 512), torch.randn(512, 2048))
    assert not any(c.get("TMA") for c in matmul_configs.matmul_candidates(big, interpret=False))
