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


# -- arguments, defaults, aliases and configs ---------------------------------------------------
NEW_CLASSES = ["Conv1D", "MaxPooling1D", "AveragePooling1D", "GlobalMaxPooling1D", "GlobalAveragePooling1D",
               "SpatialDropout1D"]
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
}


def _comparable(config):
    """A serialized layer as JSON keeps it (tuples as lists), without its name and what kcomp leaves out."""
    import json

    from test_keras_files import _comparable as without_keras_only_fields

    config = json.loads(json.dumps(config))
    config.get("config", {}).pop("name", None)
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


def test_a_sequence_model_saved_by_keras_loads_and_saves_back(tmp_path):
    theirs = randomized(conv_stack(keras))
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    np.testing.assert_allclose(ours.predict(X, verbose=0), theirs.predict(X, verbose=0), **FORWARD)
    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(back.predict(X, verbose=0), theirs.predict(X, verbose=0), **FORWARD)
    ours.save_weights(tmp_path / "ours.weights.h5")
    fresh = conv_stack(keras)
    fresh.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(fresh.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
