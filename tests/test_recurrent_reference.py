"""The recurrent ops' reference: PyTorch's fused kernels where they compute Keras's cell, the
general per-step path elsewhere, and the backward reusing the forward's tape in a training step."""

import itertools

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir import saved_forwards
from kcomp.ir.ops import recurrent, recurrent_torch
from kcomp.ir.registry import OPS

GENERAL = {"lstm": recurrent._lstm, "gru": recurrent._gru, "simple_rnn": recurrent._simple_rnn}
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _case(cell, use_bias, reset_after, generator, dtype=torch.float64):
    x = torch.randn(3, 7, 5, generator=generator, dtype=dtype)
    units = 6
    kernel = torch.randn(5, GATES[cell] * units, generator=generator, dtype=dtype) * 0.5
    rec = torch.randn(units, GATES[cell] * units, generator=generator, dtype=dtype) * 0.5
    attrs = {"reset_after": reset_after} if cell == "gru" else {}
    bias = torch.randn(recurrent.bias_shape(cell, units, attrs), generator=generator, dtype=dtype) * 0.5
    return x, kernel, rec, (bias,) if use_bias else (), attrs


@pytest.mark.parametrize("cell, activation, use_bias, return_sequences, go_backwards", [
    (cell, act, *flags) for cell in ("lstm", "gru", "simple_rnn")
    for act in (("tanh", "relu") if cell == "simple_rnn" else ("tanh",))
    for flags in itertools.product((True, False), repeat=3)
])
def test_fused_kernels_compute_keras_cells(cell, activation, use_bias, return_sequences, go_backwards):
    g = torch.Generator().manual_seed(hash((cell, activation, use_bias, return_sequences, go_backwards)) % 2**31)
    x, kernel, rec, bias, attrs = _case(cell, use_bias, True, g)
    flags = dict(activation=activation, recurrent_activation="sigmoid", use_bias=use_bias,
                 return_sequences=return_sequences, go_backwards=go_backwards, **attrs)
    got = recurrent_torch.fused(cell, x, kernel, rec, bias[0] if bias else None, **flags)
    want = GENERAL[cell](x, kernel, rec, *bias, **flags)
    assert got is not None and len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell, flags", [
    ("lstm", {"activation": "relu"}), ("lstm", {"recurrent_activation": "hard_sigmoid"}),
    ("gru", {"reset_after": False}), ("simple_rnn", {"activation": "sigmoid"}),
])
def test_cells_pytorch_does_not_have_take_the_general_path(cell, flags):
    g = torch.Generator().manual_seed(1)
    x, kernel, rec, bias, attrs = _case(cell, True, flags.get("reset_after", True), g)
    full = dict(activation="tanh", recurrent_activation="sigmoid", use_bias=True, return_sequences=True,
                go_backwards=False, **attrs)
    full.update(flags)
    assert recurrent_torch.fused(cell, x, kernel, rec, bias[0], **full) is None


def test_float16_takes_the_general_path():
    g = torch.Generator().manual_seed(2)
    x, kernel, rec, bias, _ = _case("lstm", True, True, g, dtype=torch.float16)
    assert recurrent_torch.fused("lstm", x, kernel, rec, bias[0], activation="tanh", recurrent_activation="sigmoid",
                                 use_bias=True, return_sequences=True, go_backwards=False) is None


def _seed_like_model(cell_layer):
    model = kcomp.Sequential([kcomp.layers.Input(shape=(9,), dtype="int32"), kcomp.layers.Embedding(20, 4),
                              cell_layer, kcomp.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", backend="reference")
    return model


@pytest.mark.parametrize("make_cell", [
    lambda: kcomp.layers.LSTM(5), lambda: kcomp.layers.GRU(5, use_bias=False, go_backwards=True),
    lambda: kcomp.layers.SimpleRNN(5, return_sequences=False), lambda: kcomp.layers.LSTM(5, activation="relu"),
], ids=["lstm", "gru-no-bias-backwards", "simple-rnn", "lstm-general-path"])
def test_a_training_step_backs_through_the_forward_tape_with_the_same_numbers(make_cell, monkeypatch):
    """The backward op takes the tape its forward op left in the same run (no second forward),
    and trains to exactly the weights that recomputing the forward gives."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (6, 9)).astype("int32"), rng.integers(0, 2, 6).astype("float32")
    results = []
    for reuse in (True, False):
        kcomp.utils.set_random_seed(3)
        model = _seed_like_model(make_cell())
        taken = []
        take = saved_forwards.take_tape
        monkeypatch.setattr(saved_forwards, "take_tape",
                            lambda *a: taken.append(take(*a) if reuse else None) or taken[-1])
        losses = [model.train_on_batch(x, y) for _ in range(2)]
        monkeypatch.undo()
        assert all(t is not None for t in taken) if reuse else taken
        results.append((losses, model.get_weights()))
    (losses_a, weights_a), (losses_b, weights_b) = results
    assert losses_a == losses_b
    for a, b in zip(weights_a, weights_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_tape_is_kept_outside_a_run_with_the_backward():
    """A forward-only run records nothing (predict, evaluate; a graph without the backward op)."""
    g = torch.Generator().manual_seed(4)
    x, kernel, rec, bias, _ = _case("lstm", True, True, g, dtype=torch.float32)
    attrs = OPS["lstm"].resolve_attrs({})
    with saved_forwards.for_run({"gru"}):  # a run whose backward is another op's
        outputs = OPS["lstm"].reference(x, kernel, rec, *bias, **attrs)
        assert saved_forwards.take_tape("lstm", (x, kernel, rec, *bias), attrs) is None
    assert all(o.grad_fn is None for o in outputs)


@pytest.mark.parametrize("layer_class", [kcomp.layers.LSTM, kcomp.layers.GRU, kcomp.layers.SimpleRNN])
def test_input_dropout_drops_the_same_features_at_every_time_step(layer_class):
    """Keras's cells draw one input mask per sequence (batch, features) and use it at every step:
    each sample's training output is the inference output on x * m for one m in {0, 1/(1-rate)}^features."""
    rate, features = 0.5, 3
    layer = layer_class(4, dropout=rate, return_sequences=True, seed=11)
    model = kcomp.Sequential([kcomp.layers.Input(shape=(6, features)), layer])
    x = np.random.default_rng(5).normal(size=(8, 6, features)).astype("float32")
    got = np.asarray(model(x, training=True))
    candidates = [np.array(bits, dtype="float32") / (1 - rate) for bits in itertools.product((0, 1), repeat=features)]
    dropped = set()
    for i in range(len(x)):
        matches = [m for m in candidates
                   if np.allclose(model.predict(x[i : i + 1] * m, verbose=0)[0], got[i], rtol=1e-5, atol=1e-6)]
        assert matches, f"sample {i}: no mask constant over time gives its output"
        dropped.add(tuple(matches[0]))
    assert len(dropped) > 1  # masks differ across the batch
    assert not np.allclose(np.asarray(model(x, training=True)), got)  # a new draw each call


def test_recurrent_dropout_trains_and_is_ignored_in_inference():
    """(Its numbers against Keras: tests/test_recurrent_dropout.py.)"""
    model = kcomp.Sequential([kcomp.layers.Input(shape=(4, 2)), kcomp.layers.LSTM(3, recurrent_dropout=0.2)])
    x = np.ones((2, 4, 2), "float32")
    before = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    assert np.isfinite(model.train_on_batch(x, np.zeros((2, 3), "float32")))
    assert not np.array_equal(model.predict(x, verbose=0), before)


def test_the_fused_plan_backs_through_the_forward_tape_too(monkeypatch):
    """On the triton backends a recurrent op the scan kernels do not compute (here: a time axis of
    unknown length, Input(shape=(None,))) and its backward run as torch instructions of the plan;
    the plan keeps the forward's tape for the backward as the interpreter does."""

    taken = []
    take = saved_forwards.take_tape
    monkeypatch.setattr(saved_forwards, "take_tape", lambda *a: taken.append(take(*a)) or taken[-1])
    model = kcomp.Sequential([kcomp.layers.Input(shape=(None,), dtype="int32"), kcomp.layers.Embedding(20, 4),
                              kcomp.layers.GRU(5), kcomp.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", backend="triton-interpret")
    rng = np.random.default_rng(1)
    model.train_on_batch(rng.integers(0, 20, (4, 9)).astype("int32"), rng.integers(0, 2, 4).astype("float32"))
    assert taken and all(t is not None for t in taken)
