"""The reference executor's Dense products (kcomp/runtime/dense_products.py): a matmul and its bias
as one addmm, narrow outputs in the layout MKL computes fast. Each is the product it replaces
within float32 rounding, on fresh random inputs; each takes the layout it says it takes (bit for bit
the PyTorch loop's own call); the schedule uses them where a Dense layer has them; a training step
on them follows the node-by-node interpreter, and gradients through them follow torch.autograd in
float64 (where the plain product runs)."""

import pytest
import torch
import torch.nn.functional as F

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.interpret import run_graph
from kcomp.ir.types import TensorSpec
from kcomp.passes.autodiff import gradients
from kcomp.runtime.dense_products import NARROW_FROM, is_narrow, narrow_dense, narrow_matmul
from kcomp.runtime.reference import ReferenceRun, schedule


def _randn(*shape, seed, dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("rows, inner, columns", [(128, 512, 10), (131, 130, 3), (200, 97, 2)])
def test_a_narrow_forward_is_the_linear_layers_product(rows, inner, columns):
    x, w = _randn(rows, inner, seed=1), _randn(inner, columns, seed=2)
    got = narrow_matmul(x, w)
    assert got.is_contiguous()
    assert torch.equal(got, F.linear(x, w.t().contiguous()))  # the weight as nn.Linear lays it out
    torch.testing.assert_close(got, x @ w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("inner, rows, columns", [(512, 128, 10), (130, 131, 7), (97, 200, 2)])
def test_a_narrow_weight_gradient_is_autograds_product(inner, rows, columns):
    x, dy = _randn(rows, inner, seed=3), _randn(rows, columns, seed=4)
    got = narrow_matmul(x.t(), dy)
    assert got.is_contiguous() and got.shape == (inner, columns)
    assert torch.equal(got, (dy.t() @ x).t())  # dY^T @ x, as autograd forms nn.Linear's weight gradient
    torch.testing.assert_close(got, x.t() @ dy, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("a_shape, b_shape, dtype", [
    ((32, 64), (64, 10), torch.float32),  # too small: the plain product was as fast
    ((NARROW_FROM["rows"] - 1, 512), (512, 10), torch.float32),  # too few rows for the forward's copy
])
def test_below_the_measured_sizes_it_is_the_plain_product(a_shape, b_shape, dtype):
    a, b = _randn(*a_shape, seed=5, dtype=dtype), _randn(*b_shape, seed=6, dtype=dtype)
    assert torch.equal(narrow_matmul(a, b), torch.matmul(a, b))


@pytest.mark.parametrize("rows, inner, units", [(128, 512, 10), (5, 7, 3), (130, 33, 2)])
def test_a_narrow_dense_is_the_linear_layers_call(rows, inner, units):
    x, w, b = _randn(rows, inner, seed=7), _randn(inner, units, seed=8), _randn(units, seed=9)
    got = narrow_dense(x, w, b)
    assert got.shape == (rows, units) and got.is_contiguous()
    laid_out = w.t().contiguous() if rows >= NARROW_FROM["rows"] and rows * inner >= NARROW_FROM["elements"] else w.t()
    assert torch.equal(got, F.linear(x, laid_out, b))
    torch.testing.assert_close(got, x @ w + b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("a_shape, b_shape, dtype, narrow", [
    (("N", 512), (512, 10), "float32", True),
    (("N", 512), (512, 2), "float32", True),
    (("N", 512), (512, 12), "float32", False),  # 12 columns and up: as fast as it is
    (("N", 512), (512, 1), "float32", False),  # one column: a matrix-vector product
    (("N", 512), (512, 10), "float64", False),  # measured for float32 only
    (("N", 7, 512), (512, 10), "float32", False),  # a Dense over a sequence: a batched product
])
def test_which_products_are_narrow(a_shape, b_shape, dtype, narrow):
    assert is_narrow(TensorSpec(a_shape, dtype), TensorSpec(b_shape, dtype)) == narrow


def test_nan_and_inf_go_through_the_dense_products():
    x, w, b = _randn(128, 200, seed=10), _randn(200, 10, seed=11), _randn(10, seed=12)
    x[3, 5], w[7, 2], b[4] = float("nan"), float("inf"), float("-inf")
    for got, want in [(narrow_dense(x, w, b), x @ w + b), (narrow_matmul(x, w), x @ w),
                      (narrow_matmul(x.t().contiguous().t(), w), x @ w)]:
        assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())


def test_gradients_through_them_follow_autograd_in_float64():
    x, w, b = (_randn(*s, seed=13 + i, dtype=torch.float64).requires_grad_() for i, s in enumerate([(6, 5), (5, 3), (3,)]))
    (narrow_dense(x, w, b).sin().sum() + narrow_matmul(x, w).cos().sum()).backward()
    got = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    ((x @ w + b).sin().sum() + (x @ w).cos().sum()).backward()
    for g, t in zip(got, (x, w, b)):
        torch.testing.assert_close(g, t.grad, rtol=1e-12, atol=1e-12)


def _dense_step_graph(rows, inner, units):
    """loss = sum(softmax(x @ k + bias) * c), and d loss / d (k, bias): a Dense layer's step."""
    b = GraphBuilder("dense_step")
    x, k, bias = b.input((rows, inner), "float32", "x"), b.input((inner, units), "float32", "k"), b.input((units,), "float32", "bias")
    y = b.emit1("softmax", [b.emit1("bias_add", [b.emit1("matmul", [x, k]), bias])], axis=-1)
    c = b.input(y.shape, "float32", "c")
    loss = b.emit1("sum", [b.emit1("mul", [y, c])])
    return b.finish([*gradients(b, loss, [k, bias]), loss])


@pytest.mark.parametrize("units, forward", [(10, narrow_dense), (16, torch.addmm)])
def test_a_dense_step_schedules_them_and_follows_the_interpreter(units, forward):
    graph = _dense_step_graph(150, 120, units)
    functions = [fn for fn, *_ in schedule(graph)]
    assert forward in functions and torch.matmul not in functions[:2]  # the forward with its bias
    assert (narrow_matmul in functions) == is_narrow(*graph.inputs[:2])  # the weight gradient
    inputs = [_randn(*v.shape, seed=20 + i) for i, v in enumerate(graph.inputs)]
    got, want = ReferenceRun(graph)(inputs, {}), run_graph(graph, inputs, {})
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
