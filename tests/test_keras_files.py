"""kcomp reads and writes Keras 3's own files: .weights.h5, .keras archives, configs and JSON.

Keras itself (torch backend, set by tests/conftest.py) is the oracle: the files under
tests/fixtures/keras/ were written by Keras (make_fixtures.py), and each test loads or
writes a file with both libraries and compares predictions, optimizer state, the next
training step and the files' layout.
"""

import importlib.util
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

import kcomp  # noqa: E402
from kcomp.errors import KcompError  # noqa: E402
from kcomp.saving.keras_paths import keras_layers  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
DATA = dict(np.load(FIXTURES / "data.npz"))


def _fixture_builders():
    """The fixtures' models, from the script that made them: mlp(lib), branch(lib)."""
    spec = importlib.util.spec_from_file_location("make_keras_fixtures", FIXTURES / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.mlp, module.branch


mlp, branch = _fixture_builders()


@pytest.fixture(autouse=True)
def fresh_keras_names():
    """Keras's automatic names count from the start in each test, as kcomp's do (tests/conftest.py)."""
    keras.backend.clear_session()


def h5_layout(path):
    """Every group and dataset of an HDF5 file: path -> (shape, dtype) for datasets, None for groups."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, (obj.shape, obj.dtype.kind) if isinstance(obj, h5py.Dataset) else None))
    return out


def h5_arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def every_layer(lib):
    """Every layer kcomp supports, in one two-input, two-output functional model."""
    L = lib.layers
    x = lib.Input((6, 6, 3), name="img")
    c = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", activation="relu")(x))
    s = L.Add()([L.MaxPooling2D()(c), L.AveragePooling2D(2)(c)])
    cat = L.Concatenate()([L.GlobalAveragePooling2D()(s), L.GlobalMaxPooling2D()(s), L.Flatten()(s)])
    d = L.LayerNormalization()(L.Dropout(0.5)(L.Dense(8, activation="relu")(cat)))
    d = L.Softmax()(L.LeakyReLU()(L.ReLU()(L.Activation("tanh")(d))))
    r = L.Permute((2, 1))(L.Reshape((2, 4))(d))
    h = L.SimpleRNN(3)(L.GRU(3, return_sequences=True)(L.LSTM(3, return_sequences=True)(r)))
    m = L.Maximum()([L.Average()([L.Multiply()([L.Subtract()([h, h]), h]), h]), h])
    ids = lib.Input((5,), dtype="int32", name="ids")
    e = L.Flatten()(L.Embedding(10, 3)(ids))
    out = L.Dense(2, name="out")(L.Concatenate()([m, e]))
    return lib.Model([x, ids], [out, d], name="every")


def every_layer_inputs():
    rng = np.random.default_rng(3)
    return [rng.random((3, 6, 6, 3), dtype=np.float32), rng.integers(0, 10, (3, 5)).astype("int32")]


def random_weights(model, seed=0):
    """Weights away from their initial values (BatchNormalization's statistics too)."""
    rng = np.random.default_rng(seed)
    return [(rng.random(w.shape) + 0.5).astype("float32") for w in model.get_weights()]


# -- .weights.h5 ---------------------------------------------------------------------------
def test_weights_h5_layout_and_values_match_keras(tmp_path):
    ours = branch(kcomp)
    theirs = branch(keras)
    theirs.set_weights(random_weights(theirs))
    ours.set_weights(theirs.get_weights())
    ours.save_weights(tmp_path / "ours.weights.h5")
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "theirs.weights.h5")
    a, b = h5_arrays(tmp_path / "ours.weights.h5"), h5_arrays(tmp_path / "theirs.weights.h5")
    assert sorted(a) == sorted(b) and len(a) == 12
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # The paths follow Keras's layer order, not kcomp's names.
    assert [type(l).__name__ for l in keras_layers(ours)] == [type(l).__name__.replace("Functional", "Model") for l in theirs.layers]


def test_second_model_loads_the_first_ones_file_and_npz_still_works(tmp_path):
    x = DATA["img_x"]
    first = branch(kcomp)
    first.set_weights(random_weights(first, 1))
    first.save_weights(tmp_path / "w.weights.h5")
    first.save_weights(tmp_path / "w.npz")
    second = branch(kcomp)  # generated names differ: dense_3, ... instead of dense, ...
    assert {l.name for l in second.layers}.isdisjoint({l.name for l in first.layers if not l.name.startswith("input")})
    second.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_array_equal(second.predict(x, verbose=0), first.predict(x, verbose=0))
    third = branch(kcomp)
    third.set_weights(random_weights(third, 2))
    with zipfile.ZipFile(tmp_path / "w.npz") as z:  # the .npz keeps kcomp's own names
        assert "dense/kernel.npy" in z.namelist()
    with pytest.raises(KcompError, match="has no weights for"):
        third.load_weights(tmp_path / "w.npz")
    first.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(first.predict(x, verbose=0), second.predict(x, verbose=0))


def test_keras_weights_fixture_loads_into_kcomp_and_kcomp_file_into_keras(tmp_path):
    x = DATA["mlp_x"]
    theirs = mlp(keras)
    theirs.load_weights(FIXTURES / "mlp_adam.weights.h5")
    ours = mlp(kcomp)
    ours.load_weights(FIXTURES / "mlp_adam.weights.h5")  # uncompiled: the optimizer's part is not read
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    ours.save_weights(tmp_path / "back.weights.h5")
    again = mlp(keras)
    again.load_weights(tmp_path / "back.weights.h5")
    for a, b in zip(again.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_saves_optimizer_variables_in_weights_files_and_kcomp_restores_them(tmp_path):
    """Keras 3's save_weights writes optimizer/vars too (checked here), so kcomp writes and reads them."""
    layout = h5_layout(FIXTURES / "mlp_adam.weights.h5")
    assert layout["optimizer/vars/0"] == ((), "i") and layout["optimizer/vars/2"] == ((4, 8), "f")
    ours = mlp(kcomp)
    ours.compile(optimizer=kcomp.optimizers.Adam(0.01), loss="categorical_crossentropy", backend="reference")
    ours.load_weights(FIXTURES / "mlp_adam.weights.h5")
    assert ours.optimizer.iterations == 2
    stored = h5_arrays(FIXTURES / "mlp_adam.weights.h5")
    np.testing.assert_array_equal(ours.optimizer.slots[ours.layers[0].kernel.path][1].numpy(), stored["optimizer/vars/3"])
    ours.save_weights(tmp_path / "again.weights.h5")
    assert h5_layout(tmp_path / "again.weights.h5") == layout


# -- .keras archives ------------------------------------------------------------------------
def test_keras_mlp_archive_resumes_training_as_keras_does():
    x, y = DATA["mlp_x"], DATA["mlp_y"]
    theirs = keras.saving.load_model(FIXTURES / "mlp_adam.keras")
    ours = kcomp.models.load_model(FIXTURES / "mlp_adam.keras")
    assert isinstance(ours, kcomp.Sequential) and [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    opt = ours.optimizer
    assert isinstance(opt, kcomp.optimizers.Adam) and opt.iterations == int(theirs.optimizer.iterations) == 2
    assert opt.learning_rate == pytest.approx(0.01)
    theirs_vars = [v.numpy() for v in theirs.optimizer.variables]
    ours_vars = [opt.slots[w.path][j].numpy() for w in ours.trainable_weights for j in (0, 1)]
    for a, b in zip(ours_vars, theirs_vars[2:]):
        np.testing.assert_array_equal(a, b)
    assert ours.compile_settings["loss"] == "categorical_crossentropy"
    for _ in range(2):
        ours_logs = ours.train_on_batch(x, y, return_dict=True)
        theirs_logs = theirs.train_on_batch(x, y, return_dict=True)
        assert ours_logs["loss"] == pytest.approx(float(theirs_logs["loss"]), rel=1e-5)
        assert ours_logs["accuracy"] == pytest.approx(float(theirs_logs["accuracy"]))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_keras_functional_archive_loads_with_its_branch_and_optimizer():
    x, y = DATA["img_x"], DATA["img_y"]
    theirs = keras.saving.load_model(FIXTURES / "branch_sgd.keras")
    ours = kcomp.models.load_model(FIXTURES / "branch_sgd.keras")
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    opt = ours.optimizer
    assert isinstance(opt, kcomp.optimizers.SGD) and opt.hyper["momentum"] == pytest.approx(0.9) and opt.iterations == 1
    moments = [v.numpy() for v in theirs.optimizer.variables[2:]]
    assert len(moments) == len(ours.trainable_weights) == 10 and any(np.abs(m).max() > 0 for m in moments)
    for w, m in zip([v for l in theirs.layers for v in l.trainable_weights], moments):
        mine = next(v for v in ours.trainable_weights if v.path.endswith(w.path.split("/")[-1]) and v.shape == tuple(w.shape)
                    and v.owner.name == w.path.split("/")[0])
        np.testing.assert_array_equal(opt.slots[mine.path][0].numpy(), m)
    ours_loss = ours.evaluate(x, y, verbose=0)
    assert ours_loss == pytest.approx(float(theirs.evaluate(x, y, verbose=0)), rel=1e-5)


def test_kcomp_archive_loads_in_keras_and_both_train_on_identically(tmp_path):
    x, y = DATA["mlp_x"], DATA["mlp_y"]
    ours = mlp(kcomp)
    ours.compile(optimizer=kcomp.optimizers.Adam(0.02), loss="categorical_crossentropy", metrics=["accuracy"], backend="reference")
    ours.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    ours.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        config = json.loads(z.read("config.json"))
    assert config["class_name"] == "Sequential" and config["compile_config"]["loss"] == "categorical_crossentropy"
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    assert int(theirs.optimizer.iterations) == 2 and float(theirs.optimizer.learning_rate) == pytest.approx(0.02)
    for _ in range(2):
        assert ours.train_on_batch(x, y) == pytest.approx([float(v) for v in theirs.train_on_batch(x, y)], rel=1e-5)
    # and back: kcomp reads what it wrote
    again = kcomp.models.load_model(tmp_path / "m.keras")
    assert again.optimizer.iterations == 2


def test_every_layer_archive_both_ways_and_configs_match_keras(tmp_path):
    xs = every_layer_inputs()
    theirs = every_layer(keras)
    theirs.set_weights([w + 0.1 for w in theirs.get_weights()])  # BatchNormalization's statistics off 0 and 1
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    assert ours.optimizer is None  # saved uncompiled
    for a, b in zip(ours.predict(xs, verbose=0), theirs.predict(xs, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras")
    assert [l.name for l in back.layers] == [l.name for l in theirs.layers]
    for a, b in zip(back.predict(xs, verbose=0), theirs.predict(xs, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert _comparable(ours.get_config()) == _comparable(theirs.get_config())


def _comparable(config):
    """A config without what kcomp leaves out: per-layer build configs, Keras's shared-object ids,
    new initializer fields (input_axes, output_axes) and call kwargs Keras records with their defaults."""
    if isinstance(config, dict):
        drop = {"build_config", "shared_object_id", "input_axes", "output_axes"}
        out = {k: _comparable(v) for k, v in config.items() if k not in drop}
        if set(out) == {"args", "kwargs"}:
            out["kwargs"] = {k: v for k, v in out["kwargs"].items() if not (k in ("mask", "training") and v in (None, False))}
        return out
    if isinstance(config, (list, tuple)):
        return [_comparable(v) for v in config]
    return config


def test_get_config_from_config_and_json_round_trip_through_keras():
    x = DATA["img_x"]
    ours = branch(kcomp)
    ours.set_weights(random_weights(ours, 4))
    ours.compile(optimizer=kcomp.optimizers.RMSprop(0.003, momentum=0.5), loss="mse", metrics=["mae"], backend="reference")
    # kcomp's config -> Keras -> Keras's JSON -> kcomp
    theirs = keras.Model.from_config(ours.get_config())
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    theirs_again = keras.models.model_from_json(ours.to_json())
    assert theirs_again.optimizer.__class__.__name__ == "RMSprop" and float(theirs_again.optimizer.momentum) == 0.5
    rebuilt = kcomp.models.model_from_json(theirs_again.to_json())
    assert isinstance(rebuilt.optimizer, kcomp.optimizers.RMSprop) and rebuilt.optimizer.hyper["momentum"] == 0.5
    assert rebuilt.compile_settings["metrics"] == ["mae"]
    rebuilt.set_weights(ours.get_weights())
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    # from_config on both model classes
    clone = kcomp.Model.from_config(ours.get_config())
    assert [type(l) for l in clone.layers] == [type(l) for l in ours.layers]
    seq = mlp(kcomp)
    seq_clone = kcomp.Sequential.from_config(seq.get_config())
    assert isinstance(seq_clone, kcomp.Sequential) and seq_clone.count_params() == seq.count_params() == 67
    assert _comparable(keras.Sequential.from_config(seq.get_config()).get_config()) == _comparable(seq.get_config())


def test_shared_layer_and_nodes_round_trip(tmp_path):
    """A layer called twice: its second call is node 1 in Keras's inbound_nodes, in both directions."""

    def shared(lib):
        a, b = lib.Input((3,)), lib.Input((3,))
        dense = lib.layers.Dense(2)
        return lib.Model([a, b], lib.layers.Add()([dense(a), dense(b)]))

    theirs = shared(keras)
    theirs.save(tmp_path / "shared.keras")
    ours = kcomp.models.load_model(tmp_path / "shared.keras")
    xs = [np.ones((2, 3), "float32"), np.arange(6, dtype="float32").reshape(2, 3)]
    np.testing.assert_allclose(ours.predict(xs, verbose=0), theirs.predict(xs, verbose=0), rtol=1e-6)
    assert _comparable(ours.get_config()) == _comparable(theirs.get_config())
    assert len(ours.get_weights()) == 2


def test_nested_models_use_keras_paths(tmp_path):
    if not issubclass(kcomp.Model, kcomp.layers.Layer):
        pytest.skip("kcomp models cannot be layers of other models in this checkout")

    def nested(lib):
        inner = lib.Sequential([lib.Input((4,)), lib.layers.Dense(3), lib.layers.Dense(2)])
        i = lib.Input((4,))
        base = lib.Model(i, lib.layers.Dense(4)(i))
        x = lib.Input((4,))
        return lib.Model(x, inner(lib.layers.Dense(4)(base(x))))

    theirs = nested(keras)
    theirs.set_weights(random_weights(theirs, 5))
    theirs.save_weights(tmp_path / "n.weights.h5")
    ours = nested(kcomp)
    ours.load_weights(tmp_path / "n.weights.h5")
    x = np.linspace(0, 1, 8, dtype="float32").reshape(2, 4)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    ours.save_weights(tmp_path / "ours.weights.h5")
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "n.weights.h5")
    # and as archives: a nested model is one layer of the config, its own config inside
    theirs.save(tmp_path / "n.keras")
    loaded = kcomp.models.load_model(tmp_path / "n.keras")
    assert [type(l).__name__ for l in loaded.layers] == ["InputLayer", "Model", "Dense", "Sequential"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    loaded.save(tmp_path / "back.keras")
    back = keras.saving.load_model(tmp_path / "back.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# -- the command line ------------------------------------------------------------------------
def test_cli_convert_writes_k_text_that_builds_the_same_model(tmp_path, capsys):
    from kcomp.cli import main
    from kcomp.model_files import load_models

    x = DATA["img_x"]
    assert main(["convert", str(FIXTURES / "branch_sgd.keras"), "-o", str(tmp_path / "b.k"), "--weights", str(tmp_path / "b.weights.h5")]) == 0
    text = (tmp_path / "b.k").read_text()
    assert "conv2d(input_layer" in text and "optimizer = sgd(learning_rate=0.05, momentum=0.9)" in text
    (converted,) = load_models(tmp_path / "b.k").values()
    converted.load_weights(tmp_path / "b.weights.h5")
    original = kcomp.models.load_model(FIXTURES / "branch_sgd.keras")
    np.testing.assert_array_equal(converted.predict(x, verbose=0), original.predict(x, verbose=0))
    assert converted.compile_config.settings["loss"] == "mse"
    # every layer kcomp has, through Keras's archive and back to text
    theirs = every_layer(keras)
    theirs.save(tmp_path / "every.keras")
    assert main(["convert", str(tmp_path / "every.keras"), "-o", str(tmp_path / "every.k"), "--weights", str(tmp_path / "every.weights.h5")]) == 0
    (again,) = load_models(tmp_path / "every.k").values()
    again.load_weights(tmp_path / "every.weights.h5")
    for a, b in zip(again.predict(every_layer_inputs(), verbose=0), theirs.predict(every_layer_inputs(), verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert [type(l).__name__ for l in again.layers] == [type(l).__name__.replace("Functional", "Model") for l in theirs.layers]


def test_cli_fit_resumes_a_keras_archive_and_build_reads_one(tmp_path):
    from kcomp.cli import main

    x, y = DATA["mlp_x"], DATA["mlp_y"]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out = tmp_path / "after.keras"
    # One batch of all 8 samples: the step is the same whatever order fit shuffles them into.
    assert main(["fit", str(FIXTURES / "mlp_adam.keras"), "--data", str(tmp_path / "d.npz"), "--batch-size", "8", "--save", str(out)]) == 0
    theirs = keras.saving.load_model(FIXTURES / "mlp_adam.keras")
    theirs.train_on_batch(x, y)
    resumed = keras.saving.load_model(out)
    assert int(resumed.optimizer.iterations) == 3
    for a, b in zip(resumed.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert main(["build", str(out), "-o", str(tmp_path / "build"), "--emit", "ir"]) == 0
    assert (tmp_path / "build" / "model.ir").is_file()
    assert main(["convert", str(out), "-o", str(tmp_path / "bad.txt")]) == 2


def test_inputs_and_outputs_keep_their_list_or_single_form():
    def model(lib, as_list):
        x = lib.Input((3,))
        y = lib.layers.Dense(2)(x)
        return lib.Model([x], [y]) if as_list else lib.Model(x, y)

    for as_list in (True, False):
        ours, theirs = model(kcomp, as_list), model(keras, as_list)
        assert _comparable(ours.get_config()) == _comparable(theirs.get_config())
        rebuilt = kcomp.Model.from_config(theirs.get_config())
        assert _comparable(rebuilt.get_config()) == _comparable(theirs.get_config())


def test_loss_and_metric_objects_and_a_schedule_go_through_keras_and_back(tmp_path):
    x, y = DATA["mlp_x"], DATA["mlp_y"]
    ours = mlp(kcomp)
    ours.compile(optimizer=kcomp.optimizers.Adam(kcomp.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)),
                 loss=kcomp.losses.CategoricalCrossentropy(label_smoothing=0.1),
                 metrics=["accuracy", kcomp.metrics.MeanSquaredError()], backend="reference")
    ours.fit(x, y, batch_size=4, shuffle=False, verbose=0)
    ours.save(tmp_path / "m.keras")
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    assert theirs.loss.get_config()["label_smoothing"] == 0.1
    assert type(theirs.optimizer.learning_rate).__name__ != "float"
    assert ours.train_on_batch(x, y) == pytest.approx([float(v) for v in theirs.train_on_batch(x, y)], rel=1e-5)
    theirs.save(tmp_path / "back.keras")
    again = kcomp.models.load_model(tmp_path / "back.keras")
    assert isinstance(again.optimizer.learning_rate, kcomp.optimizers.schedules.ExponentialDecay)
    assert isinstance(again.compile_settings["loss"], kcomp.losses.CategoricalCrossentropy)
    assert again.compile_settings["loss"].get_config()["label_smoothing"] == 0.1
    assert again.optimizer.iterations == 3
    assert again.train_on_batch(x, y) == pytest.approx(ours.train_on_batch(x, y), rel=1e-5)


def _recurrent_options(lib):
    L = lib.layers
    x = lib.Input((5, 3))
    seq, h, c = L.LSTM(4, return_sequences=True, return_state=True, unit_forget_bias=False, go_backwards=True)(x)
    g = L.GRU(2, reset_after=False, activation="relu", recurrent_activation="hard_sigmoid")(seq)
    r = L.SimpleRNN(3, activation="relu", use_bias=False)(seq)
    return lib.Model(x, [g, h, c, r]), np.linspace(-1, 1, 30, dtype="float32").reshape(2, 5, 3)


def _embedding_options(lib):
    L = lib.layers
    model = lib.Sequential([lib.Input((6,), dtype="int32"), L.Embedding(20, 4), L.Flatten(),
                            L.Dense(3, use_bias=False, kernel_regularizer=lib.regularizers.L2(0.01),
                                    kernel_initializer=lib.initializers.HeNormal(seed=3))])
    return model, np.arange(12, dtype="int32").reshape(2, 6)


def _conv_options(lib):
    L = lib.layers
    i = lib.Input((9, 9, 4))
    y = L.Conv2D(6, (3, 2), strides=(2, 1), padding="valid", groups=2)(i)
    y = L.Conv2D(4, 3, dilation_rate=2, padding="same", activation="gelu")(y)
    y = L.AveragePooling2D(pool_size=(2, 2), strides=1, padding="same")(y)
    y = L.BatchNormalization(momentum=0.9, epsilon=1e-2, center=False)(y)
    y = L.LayerNormalization(axis=[1, 2, 3], epsilon=1e-4, scale=False)(y)
    y = L.Reshape((4,))(L.GlobalMaxPooling2D(keepdims=True)(y))
    y = L.ReLU(max_value=6.0, negative_slope=0.1, threshold=0.2)(y)
    y = L.Activation("swish")(L.Softmax()(L.LeakyReLU(negative_slope=0.2)(y)))
    return lib.Model(i, y), np.linspace(0, 1, 648, dtype="float32").reshape(2, 9, 9, 4)


def _sequence_options(lib):
    L = lib.layers
    i = lib.Input((12, 4))
    y = L.Conv1D(6, 3, strides=1, padding="causal", dilation_rate=2, groups=2, activation="relu")(i)
    y = L.SpatialDropout1D(0.3, seed=2)(L.MaxPooling1D(3, strides=2, padding="same")(y))
    y = L.TimeDistributed(L.Dense(5, use_bias=False))(L.Conv1D(4, (2,), padding="same", use_bias=False)(y))
    y = L.Concatenate()([L.GlobalMaxPooling1D(keepdims=True)(y), L.AveragePooling1D(pool_size=6)(y)])
    return lib.Model(i, L.GlobalAveragePooling1D()(y)), np.linspace(-1, 1, 96, dtype="float32").reshape(2, 12, 4)


@pytest.mark.parametrize("build", [_recurrent_options, _embedding_options, _conv_options, _sequence_options])
def test_layer_options_survive_keras_archives_both_ways(tmp_path, build):
    theirs, x = build(keras)
    theirs.set_weights([w + 0.05 for w in theirs.get_weights()])
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    expect = theirs.predict(x, verbose=0)
    got = ours.predict(x, verbose=0)
    for a, b in zip(got if isinstance(got, list) else [got], expect if isinstance(expect, list) else [expect]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras").predict(x, verbose=0)
    for a, b in zip(back if isinstance(back, list) else [back], expect if isinstance(expect, list) else [expect]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and as .k text: every option written, so the rebuilt model computes the same
    from kcomp.dsl import loads
    from kcomp.saving.k_text import model_to_k
    from kcomp.saving.serialization import layer_to_keras

    (converted,) = loads(model_to_k(ours)).values()
    converted.set_weights(ours.get_weights())
    again = converted.predict(x, verbose=0)
    for a, b in zip(again if isinstance(again, list) else [again], expect if isinstance(expect, list) else [expect]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    def unnamed(config):  # names, a wrapped layer's too, are not part of .k text
        config = {**config, "name": None}
        if isinstance(config.get("layer"), dict):
            config["layer"] = {**config["layer"], "config": unnamed(config["layer"]["config"])}
        return config

    def keras_configs(model):
        return [_comparable(unnamed(layer_to_keras(layer)["config"])) for layer in model.layers]

    assert keras_configs(converted) == keras_configs(ours)


def test_each_layers_own_get_config_is_one_keras_builds_the_same_layer_from():
    """kcomp's layer.get_config() (initializers as {"class_name", "config"}, regularizers, shapes as
    tuples) is read by Keras's from_config into a layer whose config is the one kcomp writes to files."""
    from kcomp.saving.serialization import layer_to_keras

    model = every_layer(kcomp)
    for layer in model.layers:
        theirs = getattr(keras.layers, type(layer).__name__).from_config(layer.get_config())
        assert _comparable(keras.saving.serialize_keras_object(theirs)) == _comparable(layer_to_keras(layer)), layer.name


def test_weighted_metrics_go_through_keras_archives(tmp_path):
    x, y = DATA["mlp_x"], DATA["mlp_y"]
    weights = np.linspace(0.5, 2.0, 8).astype("float32")
    ours = mlp(kcomp)
    ours.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"], weighted_metrics=["accuracy", "mae"],
                 backend="reference")
    ours.save(tmp_path / "m.keras")
    theirs = keras.saving.load_model(tmp_path / "m.keras")
    ours_logs = ours.evaluate(x, y, sample_weight=weights, return_dict=True, verbose=0)
    theirs_logs = theirs.evaluate(x, y, sample_weight=weights, return_dict=True, verbose=0)
    assert set(ours_logs) == set(theirs_logs) and "weighted_accuracy" in ours_logs
    for key in ours_logs:
        assert ours_logs[key] == pytest.approx(theirs_logs[key], rel=1e-5), key
    theirs.save(tmp_path / "back.keras")
    assert kcomp.models.load_model(tmp_path / "back.keras").compile_settings["weighted_metrics"] == ["accuracy", "mae"]


def test_keras_2_functional_configs_read_as_keras_3_reads_them():
    """tf.keras 2 wrote no module keys, `batch_input_shape` on inputs and nodes as [[layer, node, index, kwargs]]."""
    import copy

    def dense(name, units, source, activation="linear"):
        config = {"name": name, "trainable": True, "dtype": "float32", "units": units, "activation": activation, "use_bias": True,
                  "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
                  "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None,
                  "bias_regularizer": None, "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}
        return {"class_name": "Dense", "config": config, "name": name, "inbound_nodes": [[[source, 0, 0, {}]]]}

    config = {"name": "model", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "dtype": "float32", "sparse": False,
                                                 "ragged": False, "name": "input_1"}, "name": "input_1", "inbound_nodes": []},
        dense("dense", 3, "input_1", "relu"), dense("dense_1", 3, "input_1"),
        {"class_name": "Add", "config": {"name": "add", "trainable": True, "dtype": "float32"}, "name": "add",
         "inbound_nodes": [[["dense", 0, 0, {}], ["dense_1", 0, 0, {}]]]},
    ], "input_layers": [["input_1", 0, 0]], "output_layers": [["add", 0, 0]]}
    theirs = keras.Model.from_config(copy.deepcopy(config))  # Keras empties the dict it reads
    ours = kcomp.Model.from_config(config)
    ours.set_weights(random_weights(ours, 6))
    theirs.set_weights(ours.get_weights())
    x = DATA["mlp_x"]
    got = ours.predict(x, verbose=0)  # output_layers is a list of one: kcomp predicts a list of one array
    np.testing.assert_allclose(got[0] if isinstance(got, list) else got, theirs.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_compile_false_and_an_optimizer_that_does_not_fit(tmp_path):
    ours = kcomp.models.load_model(FIXTURES / "mlp_adam.keras", compile=False)
    assert ours.optimizer is None
    np.testing.assert_allclose(ours.predict(DATA["mlp_x"], verbose=0),
                               keras.saving.load_model(FIXTURES / "mlp_adam.keras").predict(DATA["mlp_x"], verbose=0), rtol=1e-6)
    # An SGD without momentum has no slots: Keras's Adam state does not fit it, so (as Keras does) only
    # the weights load, with a warning.
    other = mlp(kcomp)
    other.compile(optimizer="sgd", loss="mse", backend="reference")
    with pytest.warns(UserWarning, match="has 10 variables, this model's sgd has 2"):
        other.load_weights(FIXTURES / "mlp_adam.weights.h5")
    assert other.optimizer.iterations == 0
    for a, b in zip(other.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_weights_move_bit_for_bit(tmp_path):
    """Keras stores bfloat16 as 2 opaque bytes with dtype="bfloat16"; kcomp reads and writes the same bits."""
    def model(lib):
        return lib.Sequential([lib.Input((3,), dtype="bfloat16"), lib.layers.Dense(4, dtype="bfloat16"),
                               lib.layers.Dense(2, dtype="bfloat16")])

    theirs = model(keras)
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    ours = model(kcomp)
    ours.load_weights(tmp_path / "theirs.weights.h5")
    kernel = ours.layers[0].kernel.value
    assert kernel.dtype == torch.bfloat16
    assert torch.equal(kernel.view(torch.int16), torch.from_numpy(np.asarray(theirs.layers[0].kernel.numpy()).view(np.int16)))
    ours.save_weights(tmp_path / "ours.weights.h5")
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "theirs.weights.h5")
    back = model(keras)
    back.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(back.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
    float32 = kcomp.Sequential([kcomp.Input((3,)), kcomp.layers.Dense(4), kcomp.layers.Dense(2)])
    with pytest.raises(KcompError, match="holds bfloat16 data, weight .* is float32"):
        float32.load_weights(tmp_path / "ours.weights.h5")


def _subclassed(lib):
    """A subclassed model holding a custom layer (its own weight and sublayers in an attribute and
    a list), a list of layers, and a private attribute: Keras addresses these by attribute name."""

    class Block(lib.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = lib.layers.Dense(3, activation="tanh")
            self.skip = [lib.layers.Dense(3), lib.layers.Dense(3)]

        def build(self, input_shape):
            self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")

        def call(self, x):
            h = self.inner(x)
            for layer in self.skip:
                h = layer(h)
            return lib.ops.multiply(h, self.scale)

    class Net(lib.Model):
        def __init__(self):
            super().__init__()
            self.first = lib.layers.Dense(4, activation="relu")
            self.blocks = [Block(), lib.layers.Dense(3)]
            self.out = lib.layers.Dense(2)
            self._private = lib.layers.Dense(2)

        def call(self, x, training=False):
            h = self.first(x)
            for block in self.blocks:
                h = block(h)
            return lib.ops.add(self.out(h), self._private(h))

    return Net()


def test_subclassed_models_and_custom_layers_use_keras_attribute_paths(tmp_path):
    x, y = DATA["img_x"].reshape(6, -1)[:, :5], DATA["img_y"][:, :2]
    theirs = _subclassed(keras)
    theirs.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    theirs.fit(x, y, batch_size=3, epochs=1, shuffle=False, verbose=0)
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    layout = h5_layout(tmp_path / "theirs.weights.h5")
    assert "blocks/block/inner/vars/0" in layout and "blocks/block/skip/dense_1/vars/0" in layout
    # `out` and `_private` are saved under `layers` (it sorts before them), numbered over all the model's
    # layers: first (dense), the block, blocks[1] (dense_1), out (dense_2), _private (dense_3).
    assert "layers/dense_2/vars/0" in layout and "layers/dense_3/vars/0" in layout and "out" not in layout
    ours = _subclassed(kcomp)
    ours.compile(optimizer=kcomp.optimizers.Adam(0.01), loss="mse", backend="reference")
    ours.predict(x, verbose=0)  # builds it
    ours.load_weights(tmp_path / "theirs.weights.h5")
    assert ours.optimizer.iterations == 2
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert ours.train_on_batch(x, y) == pytest.approx(float(theirs.train_on_batch(x, y)), rel=1e-5)
    ours.save_weights(tmp_path / "ours.weights.h5")
    theirs.save_weights(tmp_path / "theirs_after.weights.h5")  # both after the same third step
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "theirs_after.weights.h5") == layout
    a, b = h5_arrays(tmp_path / "ours.weights.h5"), h5_arrays(tmp_path / "theirs_after.weights.h5")
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_subclassed_model_is_not_written_as_a_config(tmp_path):
    model = _subclassed(kcomp)
    model.predict(np.ones((1, 5), "float32"), verbose=0)
    with pytest.raises(KcompError, match="subclassed model .*save_weights"):
        model.save(tmp_path / "net.keras")
    assert not (tmp_path / "net.keras").exists()
    model.save_weights(tmp_path / "net.weights.h5")  # its weights are
