"""Bidirectional side by side with Keras 3: outputs for every merge mode, with and without
sequences and states, the same training steps, Keras's weight order and files, configs."""

import itertools

import numpy as np
import pytest

import kcomp
from keras_oracle import keras, twins

CELLS = {"lstm": lambda lib, **kw: lib.layers.LSTM(4, **kw), "gru": lambda lib, **kw: lib.layers.GRU(3, **kw),
         "simple_rnn": lambda lib, **kw: lib.layers.SimpleRNN(5, **kw)}


def _bidirectional(cell, merge_mode, return_sequences, return_state):
    def build(lib):
        inp = lib.Input((6, 5))
        layer = lib.layers.Bidirectional(CELLS[cell](lib, return_sequences=return_sequences, return_state=return_state),
                                         merge_mode=merge_mode)
        return lib.Model(inp, layer(inp))

    return build


def _outputs(result) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


@pytest.mark.parametrize("cell, merge_mode, return_sequences, return_state", [
    *[("lstm", mode, seq, state) for mode, seq, state in
      itertools.product(("concat", "sum", "ave", "mul", None), (True, False), (False, True))],
    ("gru", "concat", True, True), ("gru", None, False, False), ("simple_rnn", "sum", True, True),
])
def test_outputs_equal_keras(cell, merge_mode, return_sequences, return_state):
    ours, theirs = twins(_bidirectional(cell, merge_mode, return_sequences, return_state))
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    x = np.random.default_rng(0).normal(size=(3, 6, 5)).astype("float32")
    got, want = _outputs(ours.predict(x, verbose=0)), _outputs(theirs.predict(x, verbose=0))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_names_and_weights_are_keras_s():
    layer = kcomp.layers.Bidirectional(kcomp.layers.LSTM(4, name="encoder"))
    assert (layer.forward_layer.name, layer.backward_layer.name) == ("forward_encoder", "backward_encoder")
    assert not layer.forward_layer.go_backwards and layer.backward_layer.go_backwards
    model = kcomp.Sequential([kcomp.layers.Input(shape=(6, 5)), layer])
    assert [w.path for w in model.weights] == [f"{side}_encoder/{name}" for side in ("forward", "backward")
                                               for name in ("kernel", "recurrent_kernel", "bias")]


def test_training_steps_equal_keras():
    def build(lib):
        inp = lib.Input((6, 5))
        hidden = lib.layers.Bidirectional(lib.layers.GRU(3, return_sequences=True), merge_mode="ave")(inp)
        pooled = lib.layers.Bidirectional(lib.layers.LSTM(4))(hidden)
        return lib.Model(inp, lib.layers.Dense(1, activation="sigmoid")(pooled))

    ours, theirs = twins(build, optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 6, 5)).astype("float32"), rng.integers(0, 2, (8, 1)).astype("float32")
    for _ in range(3):
        np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), rtol=1e-5)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-6)


def test_keras_files_load_both_ways(tmp_path):
    ours, theirs = twins(_bidirectional("lstm", "concat", True, False))
    theirs.set_weights([w * 1.5 for w in theirs.get_weights()])
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    ours.load_weights(tmp_path / "theirs.weights.h5")
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    theirs.save(tmp_path / "theirs.keras")
    loaded = kcomp.models.load_model(tmp_path / "theirs.keras")
    x = np.random.default_rng(2).normal(size=(2, 6, 5)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    ours.save(tmp_path / "ours.keras")
    back = keras.models.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_config_round_trip_keeps_a_given_backward_layer():
    layer = kcomp.layers.Bidirectional(kcomp.layers.GRU(3, return_sequences=True), merge_mode="sum",
                                       backward_layer=kcomp.layers.GRU(3, return_sequences=True, go_backwards=True,
                                                                       reset_after=False, name="back"))
    again = kcomp.layers.Bidirectional.from_config(layer.get_config())
    assert again.merge_mode == "sum" and again.backward_layer.name == "back" and not again.backward_layer.reset_after


@pytest.mark.parametrize("kwargs, match", [
    (dict(layer=kcomp.layers.Dense(3)), "must be a recurrent layer"),
    (dict(layer=kcomp.layers.LSTM(3), merge_mode="max"), "merge_mode='max'"),
    (dict(layer=kcomp.layers.LSTM(3), backward_layer=kcomp.layers.LSTM(3)), "go_backwards"),
    (dict(layer=kcomp.layers.LSTM(3), backward_layer=kcomp.layers.LSTM(3, go_backwards=True, return_sequences=True)),
     "return_sequences"),
])
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(kcomp.KcompError, match=match):
        kcomp.layers.Bidirectional(**kwargs)


def test_config_survives_json_and_an_eager_call_runs():
    """What the one-layer harness checks for other layers: the config through JSON, and a call on data."""
    import json

    layer = kcomp.layers.Bidirectional(kcomp.layers.LSTM(4, return_sequences=True), merge_mode="mul")
    config = layer.get_config()
    again = kcomp.layers.Bidirectional.from_config(json.loads(json.dumps(config)))
    assert again.get_config() == {**config, "name": again.name}
    out = again(np.ones((2, 6, 5), "float32"))
    assert tuple(out.shape) == (2, 6, 4)


def test_k_text_writes_and_reads_it():
    from kcomp import dsl
    from kcomp.saving.k_text import ConvertError, model_to_k

    model = dsl.loads("model k { input(6, 5) bidirectional(gru(4, return_sequences=true), merge_mode=sum) "
                      "global_average_pooling1d() dense(1) }")["k"]
    text = model_to_k(model)
    assert "bidirectional(gru(" in text and "merge_mode=sum" in text
    again = dsl.loads(text)[model.name]
    again.set_weights(model.get_weights())
    x = np.random.default_rng(3).normal(size=(2, 6, 5)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    own = kcomp.Sequential([kcomp.layers.Input(shape=(6, 5)), kcomp.layers.Bidirectional(
        kcomp.layers.LSTM(3), backward_layer=kcomp.layers.LSTM(3, go_backwards=True, use_bias=False))])
    with pytest.raises(ConvertError, match="its own backward_layer"):
        model_to_k(own)
