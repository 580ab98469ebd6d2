"""recurrent_dropout as Keras's cells apply it (their implementation 1): in training each gate
reads the inputs times its own input mask and h_{t-1} times its own recurrent mask, both drawn
once per sequence. The op's numbers against Keras 3's layers given the same masks (float32), its
gradients against torch.autograd through the cells written out (float64); the masks the layers
draw; training on the reference and on the generated kernels."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.registry import OPS
from kernel_helpers import assert_compiled_steps_match_the_reference

BATCH, TIME, FEATURES, UNITS = 3, 7, 5, 6
RATE, RECURRENT_RATE = 0.25, 0.4
CELLS = [("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False}), ("simple_rnn", {})]
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
KERAS_NAMES = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}


def _masks(cell, seed):
    """Dropout masks as Keras draws them: each entry 0 or 1 / (1 - rate), (batch, gates, width)."""
    rng = np.random.default_rng(seed)
    gates = GATES[cell]
    inputs = (rng.random((BATCH, gates, FEATURES)) >= RATE) / (1 - RATE)
    recurrent = (rng.random((BATCH, gates, UNITS)) >= RECURRENT_RATE) / (1 - RECURRENT_RATE)
    return inputs, recurrent


def _keras_layer(cell, extra, flags, dtype):
    keras = pytest.importorskip("keras")
    layer = getattr(keras.layers, KERAS_NAMES[cell])(UNITS, dropout=RATE, recurrent_dropout=RECURRENT_RATE,
                                                     dtype=dtype, **extra, **flags)
    layer.build((BATCH, TIME, FEATURES))
    g = np.random.default_rng(3)
    for w in layer.weights:  # O(1) pre-activations, not saturated
        w.assign(g.normal(scale=0.5, size=w.shape).astype(dtype))
    return layer


def _keras_forward(layer, cell, x, masks):
    """Keras's layer in training with our masks in its cell's cache (its RNN draws only when empty)."""
    inputs, recurrent = (torch.as_tensor(m, dtype=x.dtype) for m in masks)
    per_gate = GATES[cell] > 1  # Keras keeps a list of masks per gate, a single one for SimpleRNN
    layer.cell._dropout_mask = [inputs[:, g] for g in range(GATES[cell])] if per_gate else inputs[:, 0]
    layer.cell._recurrent_dropout_mask = [recurrent[:, g] for g in range(GATES[cell])] if per_gate else recurrent[:, 0]
    out = layer(x, training=True)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _op_inputs(layer, x, masks, dtype):
    weights = [torch.as_tensor(np.asarray(w.numpy()), dtype=dtype) for w in layer.weights]
    return [x, *weights, *(torch.as_tensor(m, dtype=dtype) for m in masks)]


FLAGS = [dict(), dict(return_sequences=True, go_backwards=True), dict(return_state=True)]


@pytest.mark.parametrize("flags", FLAGS, ids=["last", "sequences-backwards", "state"])
@pytest.mark.parametrize("cell,extra", CELLS, ids=["lstm", "gru", "gru-reset-before", "simple-rnn"])
def test_the_op_gives_keras_numbers_with_the_same_masks(cell, extra, flags):
    layer = _keras_layer(cell, extra, flags, "float32")
    masks = _masks(cell, seed=1)
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(BATCH, TIME, FEATURES)), dtype=torch.float32)
    theirs = _keras_forward(layer, cell, x, masks)
    op_flags = {k: v for k, v in flags.items() if k != "return_state"}
    attrs = OPS[cell].resolve_attrs({**extra, **op_flags, "dropout_masks": True})
    ours = OPS[cell].reference(*_op_inputs(layer, x, masks, torch.float32), **attrs)
    for mine, keras_out in zip(ours, theirs):  # Keras returns the output, then the states
        torch.testing.assert_close(mine, keras_out.detach(), rtol=1e-5, atol=1e-6)
    # Masks of ones are no dropout: the op then equals the op without masks (PyTorch's fused path).
    ones = [np.ones_like(m) for m in masks]
    plain = OPS[cell].reference(*_op_inputs(layer, x, masks, torch.float32)[:-2],
                                **OPS[cell].resolve_attrs({**extra, **op_flags}))
    with_ones = OPS[cell].reference(*_op_inputs(layer, x, ones, torch.float32), **attrs)
    for a, b in zip(plain, with_ones):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def _written_out(cell, extra, x, kernel, recurrent, bias, masks):
    """Keras's cells (implementation 1) step by step, written out: the float64 oracle."""
    m_in, m_rec = masks
    gates = range(GATES[cell])
    cols = [slice(g * UNITS, (g + 1) * UNITS) for g in gates]
    xs = [(x * m_in[:, None, g]) @ kernel[:, cols[g]] for g in gates]  # each gate's own masked inputs
    if cell == "gru" and extra["reset_after"]:
        in_bias, rec_bias = bias[0], bias[1]
    else:
        in_bias, rec_bias = bias, torch.zeros_like(bias)
    xs = [xs[g] + in_bias[cols[g]] for g in gates]
    sig = torch.sigmoid
    h = c = x.new_zeros(BATCH, UNITS)
    outputs = []
    for t in range(TIME):
        rec = [(h * m_rec[:, g]) @ recurrent[:, cols[g]] for g in gates]  # each gate's own masked h
        if cell == "lstm":
            i, f, o = sig(xs[0][:, t] + rec[0]), sig(xs[1][:, t] + rec[1]), sig(xs[3][:, t] + rec[3])
            c = f * c + i * torch.tanh(xs[2][:, t] + rec[2])
            h = o * torch.tanh(c)
        elif cell == "gru":
            z = sig(xs[0][:, t] + rec[0] + rec_bias[cols[0]])
            r = sig(xs[1][:, t] + rec[1] + rec_bias[cols[1]])
            if extra["reset_after"]:
                candidate = torch.tanh(xs[2][:, t] + r * (rec[2] + rec_bias[cols[2]]))
            else:
                candidate = torch.tanh(xs[2][:, t] + (r * (h * m_rec[:, 2])) @ recurrent[:, cols[2]])
            h = z * h + (1 - z) * candidate
        else:
            h = torch.tanh(xs[0][:, t] + rec[0])
        outputs.append(h)
    return torch.stack(outputs, 1)


CELL_IDS = ["lstm", "gru", "gru-reset-before", "simple-rnn"]


def autograd_case(cell, extra):
    """(x, kernel, recurrent kernel, bias as float64 leaves; the dropout masks; d_out of the output
    sequence; torch.autograd's gradients of the leaves through Keras's cells written out)."""
    g = np.random.default_rng(5)
    width = GATES[cell] * UNITS
    bias_shape = (2, width) if extra.get("reset_after") else (width,)
    leaves = [torch.as_tensor(g.normal(scale=0.5, size=shape), dtype=torch.float64).requires_grad_(True)
              for shape in ((BATCH, TIME, FEATURES), (FEATURES, width), (UNITS, width), bias_shape)]
    masks = [torch.as_tensor(m) for m in _masks(cell, seed=4)]
    d_out = torch.as_tensor(g.normal(size=(BATCH, TIME, UNITS)), dtype=torch.float64)
    return leaves, masks, d_out, torch.autograd.grad(_written_out(cell, extra, *leaves, masks), leaves, d_out)


@pytest.mark.parametrize("cell,extra", CELLS, ids=CELL_IDS)
def test_the_grad_op_against_autograd_in_float64(cell, extra):
    """d x, d kernel, d recurrent kernel, d bias of the whole sequence's output against
    torch.autograd through Keras's cells written out, in float64, the same masks. (Keras 3 itself
    in float64 is off by 4e-7 from both here, so it is the oracle in float32 above.)"""
    leaves, masks, d_out, expected = autograd_case(cell, extra)
    attrs = OPS[f"{cell}_grad"].resolve_attrs({**extra, "return_sequences": True, "dropout_masks": True,
                                               "grad_outputs": (0,)})
    ours = OPS[f"{cell}_grad"].reference(*(t.detach() for t in leaves), *masks, d_out, **attrs)
    for mine, theirs in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    forward = OPS[cell].reference(*(t.detach() for t in leaves), *masks,
                                  **OPS[cell].resolve_attrs({**extra, "return_sequences": True, "dropout_masks": True}))
    torch.testing.assert_close(forward[0], _written_out(cell, extra, *leaves, masks).detach(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layer_class", [kcomp.layers.LSTM, kcomp.layers.GRU, kcomp.layers.SimpleRNN])
def test_each_gate_draws_its_own_masks_and_each_call_new_ones(layer_class):
    layer = layer_class(UNITS, dropout=RATE, recurrent_dropout=RECURRENT_RATE, seed=7)
    model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), layer])
    x = np.random.default_rng(0).normal(size=(64, TIME, FEATURES)).astype("float32")
    inputs, recurrent = (np.asarray(m) for m in layer._gate_dropout_masks(x))
    assert inputs.shape == (64, layer.gates, FEATURES) and recurrent.shape == (64, layer.gates, UNITS)
    for mask, rate in ((inputs, RATE), (recurrent, RECURRENT_RATE)):
        np.testing.assert_allclose(np.unique(mask), [0.0, 1.0 / (1 - rate)], rtol=1e-6)
        assert abs((mask == 0).mean() - rate) < 0.08  # 64 x gates x width draws
        if layer.gates > 1:
            assert not np.array_equal(mask[:, 0], mask[:, 1])  # a mask per gate
    assert not np.array_equal(inputs[:, 0] == 0, recurrent[:, 0, :FEATURES] == 0)  # their own seeds
    trained = [np.asarray(model(x, training=True)) for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])  # drawn anew each call
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))  # inference: no dropout


def test_without_input_dropout_the_input_masks_are_ones():
    layer = kcomp.layers.LSTM(UNITS, recurrent_dropout=RECURRENT_RATE, seed=3)
    kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), layer])
    inputs, recurrent = (np.asarray(m) for m in layer._gate_dropout_masks(np.ones((4, TIME, FEATURES), "float32")))
    np.testing.assert_array_equal(inputs, np.ones((4, 4, FEATURES)))
    assert (recurrent == 0).any()


@pytest.mark.parametrize("layer_class", [kcomp.layers.LSTM, kcomp.layers.GRU, kcomp.layers.SimpleRNN])
def test_training_on_the_generated_kernels_matches_the_reference(layer_class):
    """The masks are Philox draws that the generated dropout kernels and the reference make alike;
    each cell runs as its scan kernels (test_kernels_recurrent_dropout.py: the LSTM's;
    test_kernels_recurrent_gru_rnn_dropout.py: the GRU's and SimpleRNN's)."""
    def make():
        kcomp.utils.set_random_seed(9)
        return kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)),
                                 layer_class(UNITS, dropout=RATE, recurrent_dropout=RECURRENT_RATE),
                                 kcomp.layers.Dense(3, activation="softmax")])

    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(make, x, y, steps=2)
