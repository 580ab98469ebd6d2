"""The shift op (kcomp/ir/ops/shape.py), the simplify rule that moves it after views, and the
matmul that reads its A operand shifted instead of a torch op writing it (kernels/matmul.py
SHIFT_AXIS, kcomp/passes/fuse_gather.py): an RNN backward's h_{t-1} sequence, under Triton's
interpreter at small ragged sizes."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import ArgumentError, ShapeError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.linalg import _dense_kernel_grad
from kcomp.ir.registry import OPS
from kcomp.passes import run_pipeline
from kernel_helpers import assert_compiled_matches_reference, kernels_of, launch_kernel
from vjp_harness import check_vjp

BATCH, TIME, UNITS, OUT = 3, 7, 5, 6  # ragged: no block size divides them


def _late(x, axis):
    """x one step late along axis, zeros first (pad then slice): what shift(by=1) over the whole axis is."""
    x = x.movedim(axis, 0)
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]]).movedim(0, axis)


def test_shift_is_the_sequence_one_step_late_or_early_within_each_run():
    x = torch.randn(BATCH, TIME, UNITS, dtype=torch.float64)
    shift = OPS["shift"].reference
    torch.testing.assert_close(shift(x, axis=1, period=TIME, by=1), _late(x, 1), rtol=0, atol=0)
    early = shift(x, axis=1, period=TIME, by=-1)
    torch.testing.assert_close(early.flip(1), _late(x.flip(1), 1), rtol=0, atol=0)
    # batch and time merged into rows: runs of TIME rows, each shifted on its own
    merged = shift(x.reshape(BATCH * TIME, UNITS), axis=0, period=TIME, by=1)
    torch.testing.assert_close(merged, _late(x, 1).reshape(BATCH * TIME, UNITS), rtol=0, atol=0)
    assert (shift(x, axis=-1, period=1, by=1) == 0).all()  # runs of one: nothing moves in


@pytest.mark.parametrize("axis, period, by", [(1, TIME, 1), (1, TIME, -1), (0, BATCH, 1), (-1, UNITS, -1)])
def test_shift_gradient_against_autograd_in_float64(axis, period, by):
    x = np.random.default_rng(abs(axis) + period).standard_normal((BATCH, TIME, UNITS))
    check_vjp("shift", [x], {"axis": axis, "period": period, "by": by})
    check_vjp("shift", [x.reshape(BATCH * TIME, UNITS)], {"axis": 0, "period": TIME, "by": by})


def test_bad_shifts_name_the_value():
    b = GraphBuilder()
    x = b.input((None, TIME, UNITS), "float32", "x")
    assert b.emit1("shift", [b.emit1("reshape", [x], shape=(f"N*{TIME}", UNITS))], axis=0, period=TIME, by=1).shape \
        == (f"N*{TIME}", UNITS)
    with pytest.raises(ShapeError, match="period=4"):
        b.emit1("shift", [x], axis=1, period=4, by=1)  # 4 does not divide 7
    with pytest.raises(ShapeError, match="axis 3"):
        b.emit1("shift", [x], axis=3, period=1, by=1)
    with pytest.raises(ArgumentError, match="by=2"):
        b.emit1("shift", [x], axis=1, period=TIME, by=2)


def _recurrent_grad_graph(batch=None):
    """d recurrent = h_prev^T dz as the decompose pass builds it (an LSTM's, GRU's, SimpleRNN's)."""
    b = GraphBuilder("d_recurrent")
    h = b.input((batch, TIME, UNITS), "float32", "h")
    dz = b.input((batch, TIME, OUT), "float32", "dz")
    h_prev = b.emit1("shift", [h], axis=1, period=TIME, by=1)
    return b.finish([_dense_kernel_grad(b, h_prev, dz)])


def test_the_weight_gradient_reads_h_one_step_late_in_its_matmul():
    graph = _recurrent_grad_graph()
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    body = kernel.attrs["body"]
    assert [n.op for n in body.nodes] == ["shift", "matmul"] and kernel.attrs["roles"] == ("gather", "anchor")
    assert body.nodes[0].attrs["axis"] == 1  # moved after the reshape and transpose: along K
    assert {n.op for n in fused.nodes} <= {"kernel", "reshape", "transpose"}  # no torch op writes h_prev
    g = torch.Generator().manual_seed(3)
    h, dz = torch.randn(BATCH, TIME, UNITS, generator=g), torch.randn(BATCH, TIME, OUT, generator=g)
    run = assert_compiled_matches_reference(graph, [h, dz], kind="accumulating", precision="ieee")
    want = torch.einsum("ntu,nto->uo", _late(h.double(), 1), dz.double())
    torch.testing.assert_close(run.got[0].double(), want, rtol=1e-5, atol=1e-5)


def test_nan_and_inf_shifted_out_are_never_read_and_the_others_propagate():
    graph = _recurrent_grad_graph(batch=BATCH)
    g = torch.Generator().manual_seed(4)
    h, dz = torch.randn(BATCH, TIME, UNITS, generator=g), torch.randn(BATCH, TIME, OUT, generator=g)
    h[0, TIME - 1, :] = float("nan")  # each sequence's last h is no step's h_{t-1}
    h[1, TIME - 1, 2] = float("inf")
    h[2, 3, 1] = float("-inf")  # read: row 1 of the gradient is -inf or NaN as in the reference
    run = assert_compiled_matches_reference(graph, [h, dz], kind="accumulating", precision="ieee",
                                            float64_reference=True)
    assert run.got[0][0].isfinite().all() and run.got[0][2].isfinite().all() and not run.got[0][1].isfinite().all()


@pytest.mark.parametrize("by", [1, -1])
@pytest.mark.parametrize("axis", [0, 1])
def test_a_shifted_a_operand_along_rows_or_columns(axis, by):
    """A (M, K) = shift(x) along M (rows) or K (columns), x a graph input: one matmul kernel,
    written into a NaN-poisoned buffer, equal to the reference."""
    shape = (BATCH * TIME, UNITS) if axis == 0 else (UNITS, BATCH * TIME)
    b = GraphBuilder("shifted_a")
    x = b.input(shape, "float32", "x")
    w = b.input((shape[1], OUT), "float32", "w")
    y = b.emit1("matmul", [b.emit1("shift", [x], axis=axis, period=TIME, by=by), w])
    graph = b.finish([b.emit1("relu", [y])])
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert [n.op for n in kernel.attrs["body"].nodes] == ["shift", "matmul", "relu"]
    g = torch.Generator().manual_seed(axis * 2 + by)
    (got,), (want,) = launch_kernel(graph, kernel, [torch.randn(shape, generator=g), torch.randn(shape[1], OUT, generator=g)],
                                    precision="ieee")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_shift_read_by_an_elementwise_op_stays_its_own_node():
    """A prologue would compute on the zeros moved in (f(0) need not be 0): no gather then."""
    b = GraphBuilder("shift_then_tanh")
    x = b.input((UNITS, BATCH * TIME), "float32", "x")
    w = b.input((BATCH * TIME, OUT), "float32", "w")
    a = b.emit1("exponential", [b.emit1("shift", [x], axis=1, period=TIME, by=1)])
    graph = b.finish([b.emit1("matmul", [a, w])])
    fused, _ = run_pipeline(graph)
    assert "shift" in [n.op for n in fused.nodes]
    g = torch.Generator().manual_seed(5)
    assert_compiled_matches_reference(graph, [torch.randn(UNITS, BATCH * TIME, generator=g),
                                              torch.randn(BATCH * TIME, OUT, generator=g)], kind="accumulating",
                                      precision="ieee")


LAYERS = {
    "lstm": lambda: kcomp.layers.LSTM(UNITS),
    "gru": lambda: kcomp.layers.GRU(UNITS),
    "simple_rnn": lambda: kcomp.layers.SimpleRNN(UNITS, return_sequences=True),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_a_recurrent_training_step_writes_no_h_prev(layer):
    """The step's d recurrent reads the h sequence shifted in its matmul: no pad, slice copy or
    shift is left to torch (measured, the examples' imdb_lstm step: 23 launches before, 21 after)."""
    from kcomp.compiler import train_step_graph
    from kcomp.passes.pipeline import STEP_PIPELINE

    model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, 4)), LAYERS[layer](), kcomp.layers.Flatten(),
                              kcomp.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    assert not [n.op for n in fused.nodes if n.op in ("pad", "shift")]
    gathered = [k for k in kernels_of(fused) if "shift" in [n.op for n in k.attrs["body"].nodes]]
    assert len(gathered) == 1 and gathered[0].attrs["template"] == "matmul"
