"""Text and sequence layers side by side with Keras 3 (torch backend): Conv1D, MaxPooling1D,
AveragePooling1D, GlobalMaxPooling1D, GlobalAveragePooling1D, SpatialDropout1D and TimeDistributed.

Each test builds one model with both libraries from one builder (tests/keras_oracle.py), Keras
holding kcomp's weights, and compares predictions; for layers with weights, one SGD step from the
same weights gives the same loss and the same new weights (so the same gradients), on the reference
executor and on the generated kernels under Triton's interpreter. Arguments, defaults, aliases and
configs are Keras's.
"""

import inspect

import numpy as np
import pytest

from keras_oracle import keras, twins
from tolerances import tolerance

import kcomp
from kcomp.saving.serialization import layer_to_keras

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras converting its torch variables

STEPS, CHANNELS = 13, 3
RNG = np.random.default_rng(11)
X = RNG.normal(size=(6, STEPS, CHANNELS)).astype("float32")
FORWARD = tolerance("float32", "accumulating")
STEP = tolerance("float32", "long")


def one_layer(make):
    """A model of one layer over (13, 3) sequences, from make(lib) -> layer."""
    return lambda lib: lib.Sequential([lib.Input((STEPS, CHANNELS)), make(lib)])


def randomized(model, seed=0):
    """Weights away from their initial values (biases are zeros at first)."""
    rng = np.random.default_rng(seed)
    model.set_weights([(0.5 * rng.normal(size=w.shape)).astype("float32") for w in model.get_weights()])
    return model


LAYERS_1D = {
    "conv1d-valid": lambda L: L.Conv1D(4, 3),
    "conv1d-same-even": lambda L: L.Conv1D(4, 4, padding="same"),
    "conv1d-same-stride2": lambda L: L.Conv1D(2, 3, strides=2, padding="same"),
    "conv1d-causal": lambda L: L.Conv1D(4, 3, padding="causal", activation="relu"),
    "conv1d-causal-dilated": lambda L: L.Conv1D(3, 2, padding="causal", dilation_rate=4),
    "conv1d-causal-stride2": lambda L: L.Conv1D(3, 3, padding="causal", strides=2),
    "conv1d-dilated": lambda L: L.Conv1D(4, 3, dilation_rate=3, activation="tanh"),
    "conv1d-groups": lambda L: L.Conv1D(6, 3, groups=3, padding="same"),
    "conv1d-no-bias": lambda L: L.Convolution1D(5, 1, use_bias=False),
    "maxpool1d-default": lambda L: L.MaxPooling1D(),
    "maxpool1d-3-2": lambda L: L.MaxPool1D(3, strides=2),
    "maxpool1d-same": lambda L: L.MaxPooling1D(4, strides=3, padding="same"),
    "avgpool1d-2": lambda L: L.AveragePooling1D(2),
    "avgpool1d-same": lambda L: L.AvgPool1D(3, strides=1, padding="same"),
    # Keras's 'same' pads evenly, the odd step after. Where that split is uneven, Keras's torch
    # backend pads average pooling with copies of the edge steps and counts them, while its
    # TensorFlow and JAX backends (and kcomp, like its AveragePooling2D) average the real steps
    # only: such a case (pool 4, strides 3 over 13 steps) is checked against a numpy reference in
    # tests/test_layers.py (avgpool1d-pool4-stride3-same) instead. An even split is the same everywhere:
    "avgpool1d-same-3-2": lambda L: L.AveragePooling1D(3, strides=2, padding="same"),
    "global-avg1d": lambda L: L.GlobalAveragePooling1D(),
    "global-avg1d-keepdims": lambda L: L.GlobalAvgPool1D(keepdims=True),
    "global-max1d": lambda L: L.GlobalMaxPooling1D(),
    "global-max1d-keepdims": lambda L: L.GlobalMaxPool1D(keepdims=True),
    "spatial-dropout1d": lambda L: L.SpatialDropout1D(0.4),  # inference: the identity
}


@pytest.mark.parametrize("name", sorted(LAYERS_1D))
def test_one_layer_predicts_as_keras(name):
    ours, theirs = twins(one_layer(lambda lib: LAYERS_1D[name](lib.layers)))
    if ours.get_weights():
        theirs.set_weights(randomized(ours).get_weights())
    assert ours.output_shape == theirs.output_shape
    np.testing.assert_allclose(ours.predict(X, verbose=0), theirs.predict(X, verbose=0), **FORWARD)


def conv_stack(lib):
    """Conv1D + activation + pool (one fused kernel), a dilated 'same' conv, an average pool, a
    global pool and a Dense head: every 1-D layer with weights, trained end to end."""
    L = lib.layers
    return lib.Sequential([
        lib.Input((STEPS, CHANNELS)),
        L.Conv1D(4, 3, padding="causal", activation="relu"),
        L.MaxPooling1D(),
        L.Conv1D(6, 2, padding="same", dilation_rate=2, activation="tanh"),
        L.AveragePooling1D(2, padding="same"),
        L.Conv1D(4, 2, groups=2),
        L.GlobalMaxPooling1D(),
        L.Dense(2),
    ])


def _sgd_step_matches_keras(build, x, y, backend):
    ours, theirs = twins(build)
    theirs.set_weights(randomized(ours).get_weights())
    ours.compile(optimizer=kcomp.optimizers.SGD(0.1), loss="mse", backend=backend)
    theirs.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ours_loss, theirs_loss = ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y))
    np.testing.assert_allclose(ours_loss, theirs_loss, **STEP)
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **STEP, err_msg=w.path)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **STEP)


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
def test_conv_stack_trains_as_keras(backend):
    y = RNG.normal(size=(len(X), 2)).astype("float32")
    _sgd_step_matches_keras(conv_stack, X, y, backend)


# -- TimeDistributed ------------------------------------------------------------------------------
VIDEO = RNG.normal(size=(4, 3, 7, 6, 2)).astype("float32")  # 4 clips of 3 frames of 7 x 6 x 2


def td_dense(lib):
    L = lib.layers
    return lib.Sequential([lib.Input((STEPS, CHANNELS)), L.TimeDistributed(L.Dense(4, activation="tanh")),
                           L.TimeDistributed(L.Dense(2))])


def td_video(lib):
    """Per-frame Conv2D + pool (one conv2d kernel over every frame) and Flatten, then an LSTM over frames."""
    L = lib.layers
    return lib.Sequential([
        lib.Input(VIDEO.shape[1:]),
        L.TimeDistributed(L.Conv2D(4, 3, padding="same", activation="relu")),
        L.TimeDistributed(L.MaxPooling2D()),
        L.TimeDistributed(L.Flatten()),
        L.LSTM(3),
        L.Dense(2),
    ])


def td_frozen_norm(lib):
    """A frozen BatchNormalization runs on its moving statistics in training too: per step or folded, the same."""
    L = lib.layers
    return lib.Sequential([lib.Input((STEPS, CHANNELS)), L.TimeDistributed(L.Dense(4)),
                           L.TimeDistributed(L.BatchNormalization(trainable=False)), L.GlobalAveragePooling1D(),
                           L.Dense(2)])


TD_MODELS = {"dense": (td_dense, X, (len(X), STEPS, 2)), "video": (td_video, VIDEO, (len(VIDEO), 2)),
             "frozen-norm": (td_frozen_norm, X, (len(X), 2))}


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("name", sorted(TD_MODELS))
def test_time_distributed_predicts_and_trains_as_keras(name, backend):
    build, x, y_shape = TD_MODELS[name]
    _sgd_step_matches_keras(build, x, RNG.normal(size=y_shape).astype("float32"), backend)


def test_time_distributed_weights_and_files_are_keras(tmp_path):
    """get_weights in Keras's order (the wrapped layer's), the same .weights.h5 layout, and an eager call."""
    from test_keras_files import h5_arrays, h5_layout

    ours, theirs = twins(td_video)
    theirs.set_weights(randomized(ours).get_weights())
    assert [w.shape for w in ours.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    assert [w.name for w in ours.layers[0].weights] == ["kernel", "bias"]
    ours.save_weights(tmp_path / "ours.weights.h5")
    theirs.save_weights(tmp_path / "theirs.weights.h5")
    assert h5_layout(tmp_path / "ours.weights.h5") == h5_layout(tmp_path / "theirs.weights.h5")
    assert "layers/time_distributed/layer/vars/0" in h5_arrays(tmp_path / "ours.weights.h5")
    fresh = td_video(keras)
    fresh.load_weights(tmp_path / "ours.weights.h5")
    np.testing.assert_allclose(fresh.predict(VIDEO, verbose=0), ours.predict(VIDEO, verbose=0), **FORWARD)
    frame_conv = ours.layers[0]
    np.testing.assert_allclose(frame_conv(VIDEO).numpy(), keras.ops.convert_to_numpy(theirs.layers[0](VIDEO)), **FORWARD)


def text_model(lib):
    """Ids -> Embedding -> SpatialDropout1D -> causal Conv1D -> TimeDistributed(Dense) -> pools -> Dense:
    every new layer in one model, for the files."""
    L = lib.layers
    ids = lib.Input((STEPS,), dtype="int32")
    e = L.SpatialDropout1D(0.2, seed=3)(L.Embedding(20, 6)(ids))
    c = L.Conv1D(6, 3, padding="causal", activation="relu")(e)
    t = L.TimeDistributed(L.Dense(4, activation="tanh"))(L.MaxPooling1D(2, padding="same")(c))
    pooled = L.Concatenate()([L.GlobalMaxPooling1D()(t), L.GlobalAveragePooling1D()(L.AveragePooling1D(2)(t))])
    return lib.Model(ids, L.Dense(2)(pooled))


def test_a_text_model_goes_through_keras_archives_both_ways(tmp_path):
    ids = RNG.integers(0, 20, size=(5, STEPS)).astype("int32")
    theirs = randomized(text_model(keras))
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in theirs.layers]
    np.testing.assert_allclose(ours.predict(ids, verbose=0), theirs.predict(ids, verbose=0), **FORWARD)
    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(back.predict(ids, verbose=0), theirs.predict(ids, verbose=0), **FORWARD)


def test_time_distributed_in_the_k_language():
    from kcomp.dsl import loads
    from kcomp.saving.k_text import model_to_k

    (model,) = loads("""
model clips {
  input(3, 7, 6, 2)
  time_distributed(conv2d(4, 3, padding=same, activation=relu))
  time_distributed(max_pool2d())
  time_distributed(flatten())
  lstm(3)
}
""").values()
    assert [type(l.layer).__name__ for l in model.layers[:3]] == ["Conv2D", "MaxPooling2D", "Flatten"]
    text = model_to_k(model)
    assert "time_distributed(conv2d(4, (3, 3), padding=same, activation=relu))" in text, text
    (again,) = loads(text).values()
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict(VIDEO, verbose=0), model.predict(VIDEO, verbose=0))


def test_batch_statistics_inside_time_distributed_are_refused_in_training():
    """Keras normalizes each step by its own batch statistics; kcomp would use the folded batch's."""
    model = kcomp.Sequential([kcomp.Input((4, 3)), kcomp.layers.TimeDistributed(kcomp.layers.BatchNormalization())])
    x = np.ones((2, 4, 3), "float32")
    assert model.predict(x, verbose=0).shape == (2, 4, 3)  # inference: the moving statistics, per element
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    with pytest.raises(kcomp.KcompError, match="TimeDistributed.*BatchNormalization.*trainable=False"):
        model.train_on_batch(x, x)


BAD_WRAPPING = {
    "not-a-layer": (lambda L: L.TimeDistributed("dense"), (4, 3), "Received: layer='dense'"),
    "rank-2-input": (lambda L: L.TimeDistributed(L.Dense(2)), (3,), "at least 3 dimensions"),
    "unknown-steps": (lambda L: L.TimeDistributed(L.Dense(2)), (None, 3), "known number of steps"),
    "two-outputs": (lambda L: L.TimeDistributed(L.LSTM(2, return_state=True)), (4, 5, 3), "one output"),
}


@pytest.mark.parametrize("make, shape, match", list(BAD_WRAPPING.values()), ids=list(BAD_WRAPPING))
def test_what_time_distributed_refuses_is_named(make, shape, match):
    with pytest.raises(kcomp.KcompError, match=match):
        make(kcomp.layers)(kcomp.Input(shape))


# -- arguments, defaults, aliases and configs ---------------------------------------------------
NEW_CLASSES = ["Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling1D",
               "SpatialDropout1D", "TimeDistributed"]
ALIASES = {
    "Convolution1D": "Conv1D", "MaxPool1D": "MaxPooling1D", "AvgPool1D": "AveragePooling1D",
    "GlobalMaxPool1D": "GlobalMaxPooling1D", "GlobalAvgPool1D": "GlobalAveragePooling1D",
}
_KERAS_ONLY = {"self", "kwargs", "lora_rank", "lora_alpha", "name", "dtype"}


def _same_default(ours, theirs) -> bool:
    """Equal, or Keras's (1, 1) where kcomp says 1 (both standardize to a tuple)."""
    if isinstance(ours, int) and isinstance(theirs, (tuple, list)):
        return all(t == ours for t in theirs)
    return ours == theirs


@pytest.mark.parametrize("name", NEW_CLASSES + ["Conv2D"])
def test_arguments_and_defaults_are_keras(name):
    from kcomp.dsl.layer_table import parameters

    theirs = inspect.signature(getattr(keras.layers, name).__init__).parameters
    ours_cls = getattr(kcomp.layers, name)
    ours = {}
    for klass in reversed(ours_cls.__mro__):  # the defaults as the class's __init__ chain gives them
        if "__init__" in vars(klass) and klass is not object:
            ours.update(inspect.signature(vars(klass)["__init__"]).parameters)
    assert [p for p in theirs if p not in _KERAS_ONLY] == [p for p in parameters(ours_cls) if p in theirs and p not in _KERAS_ONLY]
    for key, p in theirs.items():
        if key in _KERAS_ONLY:
            continue
        assert _same_default(ours[key].default, p.default), (key, ours[key].default, p.default)


@pytest.mark.parametrize("alias, name", sorted(ALIASES.items()))
def test_keras_aliases(alias, name):
    assert getattr(kcomp.layers, alias) is getattr(kcomp.layers, name)
    assert getattr(keras.layers, alias) is getattr(keras.layers, name)


def test_channels_first_is_refused_as_conv2d_refuses_it():
    for make in (lambda: kcomp.layers.Conv1D(4, 3, data_format="channels_first"),
                 lambda: kcomp.layers.MaxPooling1D(data_format="channels_first"),
                 lambda: kcomp.layers.AveragePooling1D(2, data_format="channels_first"),
                 lambda: kcomp.layers.GlobalMaxPooling1D(data_format="channels_first"),
                 lambda: kcomp.layers.GlobalAveragePooling1D(data_format="channels_first")):
        with pytest.raises(kcomp.errors.ArgumentError, match="data_format='channels_first'.*channels-last"):
            make()


CONFIGURED = {
    "conv1d": lambda L: L.Conv1D(6, 3, strides=2, padding="causal", groups=3, activation="gelu", use_bias=False,
                                 kernel_initializer="he_normal", kernel_regularizer="l2"),
    "conv1d-dilated": lambda L: L.Conv1D(4, (2,), dilation_rate=(3,), padding="same", bias_initializer="ones"),
    "maxpool1d": lambda L: L.MaxPooling1D(3, strides=1, padding="same"),
    "avgpool1d": lambda L: L.AveragePooling1D(2),
    "global-avg1d": lambda L: L.GlobalAveragePooling1D(keepdims=True),
    "global-max1d": lambda L: L.GlobalMaxPooling1D(),
    "spatial-dropout1d": lambda L: L.SpatialDropout1D(0.25, seed=7),
    "time-distributed": lambda L: L.TimeDistributed(L.Conv1D(4, 2, padding="causal", kernel_regularizer="l2")),
}


def _comparable(config):
    """A serialized layer as JSON keeps it (tuples as lists), without its name and what kcomp leaves out."""
    import json

    from test_keras_files import _comparable as without_keras_only_fields

    config = json.loads(json.dumps(config))
    config.get("config", {}).pop("name", None)
    config.get("config", {}).get("layer", {}).get("config", {}).pop("name", None)  # a wrapped layer's
    return without_keras_only_fields(config)


@pytest.mark.parametrize("name", sorted(CONFIGURED))
def test_configs_go_both_ways_with_keras(name):
    """kcomp's get_config builds Keras's layer, which serializes as kcomp writes it to files; and
    Keras's config builds kcomp's layer with the same settings."""
    ours = CONFIGURED[name](kcomp.layers)
    theirs = getattr(keras.layers, type(ours).__name__).from_config(ours.get_config())
    assert _comparable(keras.saving.serialize_keras_object(theirs)) == _comparable(layer_to_keras(ours))
    back = type(ours).from_config(CONFIGURED[name](keras.layers).get_config())
    assert _comparable(layer_to_keras(back)) == _comparable(layer_to_keras(ours))


def keras_archive_both_ways(build, x, tmp_path):
    """Keras's model of build(keras) saved as .keras, loaded by kcomp, saved again and loaded by
    Keras: the same predictions at every stage. Returns (ours, theirs)."""
    theirs = randomized(build(keras))
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **FORWARD)
    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), theirs.predict(x, verbose=0), **FORWARD)
    return ours, theirs


def test_a_sequence_model_saved_by_keras_loads_and_saves_back(tmp_path):
    ours, theirs = keras_archive_both_ways(conv_stack, X, tmp_path)
    ours.save_weights(tmp_path / "ours.weights.h5")
    fresh = conv_stack(keras)
    fresh.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(fresh.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
