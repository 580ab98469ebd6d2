"""Keras's initializer and regularizer defaults, as the layers use them.

Bounds and statistics are checked against Keras's formulas on tensors large
enough (a few hundred thousand values) for tight tolerances; fans follow
Keras: fan_in = in * receptive field, fan_out = out * receptive field.
"""

import math

import numpy as np
import pytest
import torch

import kcomp
from kcomp import initializers, layers, regularizers
from kcomp.errors import KcompError

TRUNCATED_STD = 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2]


def built(layer, input_shape, dtype="float32"):
    """The layer, built by a symbolic call on an Input of `input_shape` (batch left out)."""
    layer(kcomp.Input(shape=input_shape, dtype=dtype))
    return layer


def weight(layer, name) -> np.ndarray:
    (w,) = [w for w in layer.weights if w.name == name]
    return w.numpy().astype("float64")


# -- Keras's defaults in the layers ---------------------------------------------------


@pytest.mark.parametrize(
    "make, input_shape, fan_in, fan_out",
    [
        (lambda: layers.Dense(300), (200,), 200, 300),
        (lambda: layers.Conv2D(32, 3), (9, 11, 16), 3 * 3 * 16, 3 * 3 * 32),  # receptive field * channels
        (lambda: layers.Conv2D(24, (2, 5), groups=2), (9, 11, 16), 2 * 5 * 8, 2 * 5 * 24),
        (lambda: layers.LSTM(64), (5, 40), 40, 4 * 64),
    ],
    ids=["dense", "conv2d", "conv2d-groups", "lstm-kernel"],
)
def test_glorot_uniform_kernels(make, input_shape, fan_in, fan_out):
    kernel = weight(built(make(), input_shape), "kernel")
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit  # thousands of draws reach the edge
    np.testing.assert_allclose(kernel.var(), limit**2 / 3, rtol=0.05)  # the variance of U(-limit, limit)
    assert abs(kernel.mean()) < 0.05 * limit


@pytest.mark.parametrize(
    "make, units, gates",
    [(lambda: layers.LSTM(16), 16, 4), (lambda: layers.GRU(16), 16, 3), (lambda: layers.SimpleRNN(16), 16, 1)],
    ids=["lstm", "gru", "simple_rnn"],
)
def test_orthogonal_recurrent_kernels(make, units, gates):
    """A (u, G*u) recurrent kernel has orthonormal rows: W W^T = I (and W^T W = I when square)."""
    w = weight(built(make(), (5, 3)), "recurrent_kernel")
    assert w.shape == (units, gates * units)
    np.testing.assert_allclose(w @ w.T, np.eye(units), atol=1e-5)
    if gates == 1:
        np.testing.assert_allclose(w.T @ w, np.eye(units), atol=1e-5)


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (7, 7), (3, 4, 10)])
def test_orthogonal_initializer(shape):
    """Keras flattens to (prod(shape[:-1]), shape[-1]); the shorter side is orthonormal."""
    q = initializers.Orthogonal(gain=2.0, seed=1)(shape).double().reshape(-1, shape[-1]).numpy()
    rows, cols = q.shape
    gram = q.T @ q if rows >= cols else q @ q.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-5)


def test_lstm_unit_forget_bias():
    u = 6
    bias = weight(built(layers.LSTM(u), (5, 3)), "bias")
    want = np.zeros(4 * u)
    want[u : 2 * u] = 1.0  # gates i, f, c, o: the forget slice starts at 1
    np.testing.assert_array_equal(bias, want)
    np.testing.assert_array_equal(weight(built(layers.LSTM(u, unit_forget_bias=False), (5, 3)), "bias"), 0.0)
    # unit_forget_bias keeps the base initializer for the other gates.
    ones = weight(built(layers.LSTM(u, bias_initializer="ones"), (5, 3)), "bias")
    np.testing.assert_array_equal(ones, 1.0)
    seeded = initializers.RandomNormal(seed=3)
    rand = weight(built(layers.LSTM(u, bias_initializer=seeded), (5, 3)), "bias")
    np.testing.assert_array_equal(rand[u : 2 * u], 1.0)
    assert np.all(rand[:u] != 0) and np.all(rand[2 * u :] != 0)


def test_embedding_uniform():
    table = weight(built(layers.Embedding(1000, 64), (6,), "int32"), "embeddings")
    assert table.shape == (1000, 64)
    assert table.min() >= -0.05 and table.max() <= 0.05
    assert table.min() < -0.049 and table.max() > 0.049
    np.testing.assert_allclose(table.std(), 0.1 / math.sqrt(12), rtol=0.02)
    assert abs(table.mean()) < 1e-3


@pytest.mark.parametrize(
    "make, input_shape, dtype, expected",
    [
        (lambda: layers.Dense(4), (3,), "float32", {"bias": 0.0}),
        (lambda: layers.Conv2D(4, 3), (9, 11, 3), "float32", {"bias": 0.0}),
        (lambda: layers.GRU(4), (5, 3), "float32", {"bias": 0.0}),
        (lambda: layers.GRU(4, reset_after=False), (5, 3), "float32", {"bias": 0.0}),
        (lambda: layers.SimpleRNN(4), (5, 3), "float32", {"bias": 0.0}),
        (
            lambda: layers.BatchNormalization(),
            (9, 11, 3),
            "float32",
            {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0},
        ),
        (lambda: layers.LayerNormalization(axis=[1, 2]), (4, 6), "float32", {"gamma": 1.0, "beta": 0.0}),
    ],
    ids=["dense", "conv2d", "gru", "gru-reset-before", "simple_rnn", "batch_norm", "layer_norm"],
)
def test_constant_defaults(make, input_shape, dtype, expected):
    layer = built(make(), input_shape, dtype)
    for name, value in expected.items():
        np.testing.assert_array_equal(weight(layer, name), value)


# -- seeds -------------------------------------------------------------------------

SEEDED = [
    initializers.RandomUniform, initializers.RandomNormal, initializers.TruncatedNormal,
    initializers.VarianceScaling, initializers.GlorotUniform, initializers.GlorotNormal, initializers.HeUniform,
    initializers.HeNormal, initializers.LecunUniform, initializers.LecunNormal, initializers.Orthogonal,
]


@pytest.mark.parametrize("cls", SEEDED, ids=lambda c: c.__name__)
def test_seed_makes_an_initializer_reproducible(cls):
    shape = (30, 20)
    a = cls(seed=7)(shape)
    kcomp.utils.set_random_seed(123)  # the global seed does not touch a seeded initializer
    b = cls(seed=7)(shape)
    init = cls(seed=7)
    # Keras 3: a seeded initializer gives the same values on every call.
    torch.testing.assert_close(init(shape), init(shape), rtol=0, atol=0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, cls(seed=8)(shape))
    assert a.dtype == torch.float32 and tuple(a.shape) == shape


def test_set_random_seed_makes_layer_weights_reproducible():
    def weights():
        model_in = kcomp.Input(shape=(5, 3))
        lstm, dense, emb = layers.LSTM(4), layers.Dense(3), layers.Embedding(10, 3)
        dense(lstm(model_in))
        emb(kcomp.Input(shape=(2,), dtype="int32"))
        return [w for layer in (lstm, dense, emb) for w in layer.get_weights()]

    kcomp.utils.set_random_seed(1234)
    first = weights()
    kcomp.utils.set_random_seed(1234)
    again = weights()
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    kcomp.utils.set_random_seed(4321)
    other = weights()
    assert not np.array_equal(first[0], other[0])
    later = weights()  # no reseed: the global generator moves on
    assert not np.array_equal(other[0], later[0])


# -- statistics on large tensors --------------------------------------------------------

FAN_IN, FAN_OUT = 500, 400
SHAPE = (FAN_IN, FAN_OUT)  # 200,000 values: the std estimate is good to ~0.2 %


@pytest.mark.parametrize(
    "name, std, bound",
    [
        # truncated normals: std is the target (Keras divides by 0.8796...), cut at 2 untruncated stds
        ("he_normal", math.sqrt(2 / FAN_IN), 2 * math.sqrt(2 / FAN_IN) / TRUNCATED_STD),
        ("glorot_normal", math.sqrt(2 / (FAN_IN + FAN_OUT)), 2 * math.sqrt(2 / (FAN_IN + FAN_OUT)) / TRUNCATED_STD),
        ("lecun_normal", math.sqrt(1 / FAN_IN), 2 * math.sqrt(1 / FAN_IN) / TRUNCATED_STD),
        ("truncated_normal", 0.05 * TRUNCATED_STD, 0.1),  # Keras's TruncatedNormal(stddev=0.05): cut at 2 * 0.05
        # uniforms U(-limit, limit): std = limit / sqrt(3)
        ("glorot_uniform", math.sqrt(2 / (FAN_IN + FAN_OUT)), math.sqrt(6 / (FAN_IN + FAN_OUT))),
        ("he_uniform", math.sqrt(2 / FAN_IN), math.sqrt(6 / FAN_IN)),
        ("lecun_uniform", math.sqrt(1 / FAN_IN), math.sqrt(3 / FAN_IN)),
        ("random_uniform", 0.1 / math.sqrt(12), 0.05),
        ("uniform", 0.1 / math.sqrt(12), 0.05),
        # untruncated normals
        ("random_normal", 0.05, None),
        ("normal", 0.05, None),
    ],
)
def test_initializer_statistics(name, std, bound):
    values = initializers.get(name)(SHAPE).double().numpy()
    assert values.shape == SHAPE
    np.testing.assert_allclose(values.std(), std, rtol=0.02)
    assert abs(values.mean()) < 0.015 * std
    if bound is not None:
        assert np.abs(values).max() <= bound * (1 + 1e-6)
        assert np.abs(values).max() > 0.98 * bound
    else:
        assert np.abs(values).max() > 3.5 * std  # not truncated


@pytest.mark.parametrize(
    "kwargs, std",
    [
        (dict(scale=2.0, mode="fan_out", distribution="untruncated_normal"), math.sqrt(2 / FAN_OUT)),
        (dict(scale=0.5, mode="fan_avg", distribution="uniform"), math.sqrt(0.5 / ((FAN_IN + FAN_OUT) / 2))),
        (dict(), math.sqrt(1 / FAN_IN)),  # Keras's defaults: scale 1, fan_in, truncated_normal
    ],
)
def test_variance_scaling(kwargs, std):
    values = initializers.VarianceScaling(**kwargs, seed=2)(SHAPE).double().numpy()
    np.testing.assert_allclose(values.std(), std, rtol=0.02)


def test_random_distributions_with_arguments():
    u = initializers.RandomUniform(minval=1.0, maxval=3.0, seed=0)(SHAPE).double().numpy()
    assert u.min() >= 1.0 and u.max() <= 3.0
    np.testing.assert_allclose(u.mean(), 2.0, atol=0.01)
    n = initializers.RandomNormal(mean=-1.0, stddev=0.5, seed=0)(SHAPE).double().numpy()
    np.testing.assert_allclose([n.mean(), n.std()], [-1.0, 0.5], atol=0.01)
    t = initializers.TruncatedNormal(mean=1.0, stddev=0.5, seed=0)(SHAPE).double().numpy()
    assert t.min() >= 0.0 and t.max() <= 2.0
    np.testing.assert_allclose(t.mean(), 1.0, atol=0.01)
    np.testing.assert_array_equal(initializers.Constant(0.3)((4, 5)).numpy(), np.float32(0.3))


# -- get / serialize ------------------------------------------------------------------

NAMES = {
    "zeros": initializers.Zeros, "ones": initializers.Ones, "constant": initializers.Constant,
    "uniform": initializers.RandomUniform, "random_uniform": initializers.RandomUniform,
    "normal": initializers.RandomNormal, "random_normal": initializers.RandomNormal,
    "truncated_normal": initializers.TruncatedNormal, "variance_scaling": initializers.VarianceScaling,
    "glorot_uniform": initializers.GlorotUniform, "glorot_normal": initializers.GlorotNormal,
    "he_uniform": initializers.HeUniform, "he_normal": initializers.HeNormal,
    "lecun_uniform": initializers.LecunUniform, "lecun_normal": initializers.LecunNormal,
    "orthogonal": initializers.Orthogonal,
}


@pytest.mark.parametrize("name", list(NAMES))
def test_get_by_name(name):
    init = initializers.get(name)
    assert type(init) is NAMES[name]
    assert type(initializers.get(NAMES[name].__name__)) is NAMES[name]  # Keras's class names work too
    assert initializers.get(init) is init


@pytest.mark.parametrize(
    "init",
    [
        initializers.Zeros(), initializers.Ones(), initializers.Constant(0.25),
        initializers.RandomUniform(-0.2, 0.3, seed=4), initializers.RandomNormal(0.1, 0.2, seed=5),
        initializers.TruncatedNormal(0.0, 0.3, seed=6), initializers.VarianceScaling(2.0, "fan_out", "uniform", seed=7),
        initializers.GlorotUniform(seed=8), initializers.HeNormal(), initializers.Orthogonal(gain=1.5, seed=9),
    ],
    ids=lambda i: type(i).__name__,
)
def test_get_from_config_dict(init):
    config = initializers.serialize(init)
    assert config["class_name"] == type(init).__name__
    clone = initializers.get(config)
    assert type(clone) is type(init) and clone.get_config() == init.get_config()
    # A Keras 3 .keras file adds module / registered_name keys.
    keras3 = {"module": "keras.initializers", **config, "registered_name": None}
    assert initializers.get(keras3).get_config() == init.get_config()
    if "seed" in init.get_config() and init.get_config()["seed"] is not None:
        torch.testing.assert_close(clone((6, 4)), init((6, 4)), rtol=0, atol=0)


def test_layer_config_keeps_initializers():
    dense = layers.Dense(3, kernel_initializer=initializers.RandomNormal(stddev=0.2, seed=3), bias_initializer="ones")
    config = dense.get_config()
    assert config["kernel_initializer"] == {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 0.2, "seed": 3}}
    assert config["bias_initializer"] == {"class_name": "Ones", "config": {}}
    clone = layers.Dense.from_config({**config, "name": "dense_clone"})
    built(clone, (4,))
    built(dense, (4,))
    np.testing.assert_array_equal(clone.get_weights()[0], dense.get_weights()[0])


@pytest.mark.parametrize("bad", ["glorot_unifrom", "nope", 3, {"class_name": "Glorot"}])
def test_unknown_initializer_raises(bad):
    with pytest.raises(KcompError, match="Received"):
        initializers.get(bad)
    with pytest.raises(KcompError):
        layers.Dense(3, kernel_initializer=bad)


def test_unknown_initializer_suggests_the_name():
    with pytest.raises(KcompError, match="glorot_uniform"):
        initializers.get("glorot_unifrom")


# -- regularizers -------------------------------------------------------------------------

REGULARIZERS = [
    (regularizers.L1(0.01), {"class_name": "L1", "config": {"l1": 0.01}}),
    (regularizers.L2(0.02), {"class_name": "L2", "config": {"l2": 0.02}}),
    (regularizers.L1L2(l1=0.01, l2=0.03), {"class_name": "L1L2", "config": {"l1": 0.01, "l2": 0.03}}),
    ("l2", {"class_name": "L2", "config": {"l2": 0.01}}),  # Keras's default strength
    ("l1", {"class_name": "L1", "config": {"l1": 0.01}}),
    ({"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.25}}, {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.25}}),
]
REG_IDS = ["L1", "L2", "L1L2", "str-l2", "str-l1", "dict"]


@pytest.mark.parametrize(
    "make, input_shape, reg_args",
    [
        (layers.Dense, (4,), ("kernel_regularizer", "bias_regularizer", "activity_regularizer")),
        (layers.Conv2D, (9, 11, 3), ("kernel_regularizer", "bias_regularizer", "activity_regularizer")),
        (layers.LSTM, (5, 3), ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer", "activity_regularizer")),
    ],
    ids=["dense", "conv2d", "lstm"],
)
@pytest.mark.parametrize("reg, serialized", REGULARIZERS, ids=REG_IDS)
def test_regularizers_round_trip(make, input_shape, reg_args, reg, serialized):
    positional = (3, 2) if make is layers.Conv2D else (3,)
    layer = make(*positional, **{arg: reg for arg in reg_args})
    config = layer.get_config()
    for arg in reg_args:
        assert config[arg] == serialized, arg
    clone = make.from_config({**config, "name": f"{layer.name}_clone"})
    assert {arg: clone.get_config()[arg] for arg in reg_args} == {arg: serialized for arg in reg_args}
    built(clone, input_shape)
    by_name = {w.name: w for w in clone.weights}
    for arg, weight_name in (("kernel_regularizer", "kernel"), ("recurrent_regularizer", "recurrent_kernel"),
                             ("bias_regularizer", "bias")):
        if arg in reg_args:
            assert by_name[weight_name].regularizer is not None
            assert regularizers.serialize(by_name[weight_name].regularizer) == serialized


def test_regularizer_penalties():
    w = torch.tensor([[1.0, -2.0], [0.5, -0.25]])
    l1, l2 = 3.75, 1.0 + 4.0 + 0.25 + 0.0625
    torch.testing.assert_close(regularizers.L1(0.1)(w), torch.tensor(0.1 * l1))
    torch.testing.assert_close(regularizers.L2(0.2)(w), torch.tensor(0.2 * l2))
    torch.testing.assert_close(regularizers.L1L2(0.1, 0.2)(w), torch.tensor(0.1 * l1 + 0.2 * l2))
    assert regularizers.L1L2().get_config() == {"l1": 0.0, "l2": 0.0}  # Keras 3's class defaults
    assert regularizers.get(None) is None
    assert isinstance(regularizers.get("l1_l2"), regularizers.L1L2)


@pytest.mark.parametrize("bad", [lambda: regularizers.L2(-1.0), lambda: regularizers.get("l3"),
                                 lambda: layers.Dense(3, kernel_regularizer="l3")])
def test_bad_regularizer_raises(bad):
    with pytest.raises(KcompError, match="Received"):
        bad()
