"""The pad_slice template (kernels/pad_slice.py) under Triton's interpreter: chains of pads and slices
over ragged shapes of rank 2 to 5, alone and with elementwise ops before (its prologue) and after (its
epilogue), against the reference, into poisoned outputs; NaN and inf as torch moves them (and a
prologue's value at a masked load never reaching the padding); the gradients of such chains (pads
and slices both ways) against torch.autograd in float64; and which crops stay views."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kcomp.ir.builder import GraphBuilder
from kcomp.passes.autodiff import gradients
from kcomp.runtime.executor import PlanExecutor

from kernel_helpers import (
    assert_compiled_matches_reference, assert_launch_matches_reference, assert_same_nonfinite, kernels_of, with_nonfinite,
)
from tolerances import tolerance

# (input shape without the batch, [(op, axis, a, b)]: pad (before, after) or slice (start, stop))
CHAINS = {
    "zeropad2d": ((5, 7, 3), [("pad", 1, 1, 2), ("pad", 2, 0, 3)]),
    "crop2d": ((6, 7, 3), [("slice", 1, 1, 4), ("slice", 2, 2, 6)]),
    "crop-then-pad-one-axis": ((9, 5), [("slice", 1, 2, 7), ("pad", 1, 3, 1), ("pad", 2, 2, 0)]),
    "pad-then-crop-across-it": ((5, 4), [("pad", 1, 2, 2), ("slice", 1, 1, 8), ("slice", 2, 1, 4)]),
    "channels": ((11,), [("pad", 1, 3, 0), ("slice", 1, 2, 13)]),
    "rank5": ((3, 4, 2, 5), [("pad", 3, 1, 1), ("slice", 1, 1, 3), ("pad", 1, 0, 2), ("slice", 4, 1, 4)]),
}


def _moved(b, x, chain):
    for op, axis, first, second in chain:
        attrs = dict(before=first, after=second) if op == "pad" else dict(start=first, stop=second)
        x = b.emit1(op, [x], axis=axis, **attrs)
    return x


def _graph(shape, chain, prologue=False, epilogue=False):
    """x (and a per-channel scale) -> [tanh(x) * scale] -> the chain -> [* 0.5 + r], r of the output's shape."""
    b = GraphBuilder("moves")
    x = b.input((None, *shape), "float32", "x")
    inputs = [x]
    if prologue:
        scale = b.input((shape[-1],), "float32", "scale")
        inputs.append(scale)
        x = b.emit1("mul", [b.emit1("tanh", [x]), scale])
    y = _moved(b, x, chain)
    if epilogue:
        r = b.input(y.shape, "float32", "r")
        inputs.append(r)
        y = b.emit1("add", [b.emit1("mul", [y, b.emit1("constant", [], value=0.5)]), r])
    return b.finish([y]), inputs


def _tensors(graph, batch=3):
    return [torch.randn(*(batch if d is None or isinstance(d, str) else d for d in v.shape)) for v in graph.inputs]


@pytest.mark.parametrize("fused", ["prologue", "epilogue", "both"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_chain_is_one_kernel_matching_the_reference(name, fused):
    shape, chain = CHAINS[name]
    graph, _ = _graph(shape, chain, prologue=fused != "epilogue", epilogue=fused != "prologue")
    inputs = _tensors(graph)
    compared = assert_compiled_matches_reference(graph, inputs, kind="elementwise")
    (kernel,) = compared.fused.nodes  # the elementwise ops and every move in one launch
    assert kernel.op == "kernel" and kernel.attrs["template"] == "pad_slice"
    assert_launch_matches_reference(graph, kernel, inputs, kind="elementwise")  # into poisoned outputs
    compared = assert_compiled_matches_reference(graph, _tensors(graph, batch=1), kind="elementwise",
                                                 executor=compared.executor)  # another batch, the same plan


@pytest.mark.parametrize("name", ["zeropad2d", "pad-then-crop-across-it", "rank5"])
def test_a_bare_pad_chain_is_one_kernel(name):
    shape, chain = CHAINS[name]
    graph, inputs = _graph(shape, chain)
    compared = assert_compiled_matches_reference(graph, _tensors(graph), kind="exact")
    assert [n.attrs.get("template") for n in compared.fused.nodes] == ["pad_slice"]


def test_nan_and_inf_move_as_torch_moves_them_and_the_padding_stays_zero():
    """NaN and +-inf in x land where the chain puts them; log(x) computed as x loads gives NaN and
    -inf inside, but the padding is 0, not log(0) = -inf from a masked load."""
    b = GraphBuilder("moves")
    x = b.input((None, 6, 5, 2), "float32", "x")
    y = _moved(b, b.emit1("log", [x]), [("pad", 1, 2, 1), ("slice", 2, 1, 5), ("pad", 2, 1, 2)])
    graph = b.finish([y])
    data = with_nonfinite(torch.rand(3, 6, 5, 2) + 0.1)
    data[0, 1, 1, 0], data[1, 2, 3, 1] = 0.0, -1.0  # log: -inf and NaN
    compared = assert_compiled_matches_reference(graph, [data], kind="elementwise", float64_reference=True)
    assert [n.attrs.get("template") for n in compared.fused.nodes] == ["pad_slice"]
    got = compared.got[0]
    assert got[:, :2].eq(0).all() and got[:, :, :1].eq(0).all()  # the padding
    assert got.isnan().any() and got.isneginf().any() and got.isposinf().any()


def _torch_chain(x, chain):
    for op, axis, first, second in chain:
        if op == "pad":
            x = F.pad(x, [0, 0] * (x.dim() - 1 - axis) + [first, second])
        else:
            x = x.narrow(axis, first, second - first)
    return x


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_the_gradient_of_a_chain_runs_as_kernels_and_matches_autograd_in_float64(name):
    """loss = sum(chain(tanh(x) * scale) * c): the gradient (each pad's a slice, each slice's a
    pad, with tanh's derivative and the scale) compiled, against torch.autograd in float64."""
    shape, chain = CHAINS[name]
    b = GraphBuilder("grad")
    x = b.input((None, *shape), "float32", "x")
    scale = b.input((shape[-1],), "float32", "scale")
    y = _moved(b, b.emit1("mul", [b.emit1("tanh", [x]), scale]), chain)
    c = b.input(y.shape, "float32", "c")
    loss = b.emit1("sum", [b.emit1("mul", [y, c])])
    (dx,) = gradients(b, loss, [x])
    graph = b.finish([dx])
    inputs = _tensors(graph)
    executor = PlanExecutor(graph, "triton-interpret")
    (got,) = executor.run(inputs, {})
    moves = [n.op for n in executor.plan.graph.nodes if n.op in ("pad", "slice")]
    assert moves == [] and "pad_slice" in {k.attrs["template"] for k in kernels_of(executor.plan.graph)}
    x64, s64, c64 = (t.double() for t in inputs)
    x64.requires_grad_(True)
    (want,) = torch.autograd.grad((_torch_chain(torch.tanh(x64) * s64, chain) * c64).sum(), [x64])
    assert_same_nonfinite(got, want, **tolerance("float32", "elementwise"))


def test_a_bare_crop_read_as_strides_stays_a_view_and_one_read_by_a_kernel_moves_once():
    """A crop read only by a matmul (through strides, also transposed or with an axis of 1 dropped),
    returned, or contiguous as it is (a weight's row) is a view (kcomp/runtime/plan.py); one a
    reduction reads is a pad_slice kernel (the reduction would otherwise copy it)."""
    b = GraphBuilder("crops")
    x = b.input((None, 9, 6), "float32", "x")
    w = b.input((8, 5), "float32", "w")
    rows = b.emit1("slice", [x], axis=1, start=2, stop=6)
    product = b.emit1("matmul", [rows, b.emit1("slice", [w], axis=0, start=1, stop=7)])
    last = b.emit1("reshape", [b.emit1("slice", [x], axis=1, start=8, stop=9)], shape=("N", 6))  # an RNN's last h_t
    gram = b.emit1("matmul", [b.emit1("transpose", [last], perm=(1, 0)), last])
    cropped = b.emit1("slice", [x], axis=2, start=1, stop=5)
    total = b.emit1("sum", [b.emit1("slice", [cropped], axis=1, start=0, stop=7)], axes=(1,))
    row = b.emit1("reshape", [b.emit1("slice", [w], axis=0, start=2, stop=3)], shape=(5,))
    shifted = b.emit1("add", [product, row])
    graph = b.finish([product, gram, total, shifted, b.emit1("slice", [x], axis=1, start=0, stop=3)])
    compared = assert_compiled_matches_reference(graph, [torch.randn(3, 9, 6), torch.randn(8, 5)], kind="accumulating")
    ops = [n.attrs["template"] if n.op == "kernel" else n.op for n in compared.fused.nodes]
    kernels = ["matmul", "matmul", "pad_slice", "reduce", "pointwise"]
    assert sorted(o for o in ops if o not in ("reshape", "transpose")) == sorted(["slice"] * 5 + kernels), ops


def test_a_float16_pad_copies_exactly():
    b = GraphBuilder("half")
    x = b.input((None, 5, 3), "float16", "x")
    chain = [("pad", 1, 2, 1), ("slice", 2, 1, 3)]
    graph = b.finish([_moved(b, x, chain)])
    data = torch.randn(4, 5, 3).half()
    compared = assert_compiled_matches_reference(graph, [data], kind="elementwise")
    assert compared.got[0].dtype == torch.float16
    assert [n.attrs.get("template") for n in compared.fused.nodes] == ["pad_slice"]
    np.testing.assert_array_equal(compared.got[0].numpy(), _torch_chain(data, chain).numpy())
