"""Every op's torch reference against an independent computation (numpy formulas
and loops, or torch.nn modules the reference does not use), on fresh random,
ragged, non-zero inputs; float64 unless a test says otherwise.
"""

import math
import zlib

import numpy as np
import pytest
import torch

from kcomp.errors import KcompError, ShapeError
from kcomp.ir.registry import OPS

F64 = dict(rtol=1e-10, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture
def rng(request):
    """A fresh generator per test (seeded from the test id, so reruns are reproducible)."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def ref(op, *inputs, **attrs):
    """The registry reference with the schema's defaults filled in, as an executor calls it; checked
    to leave its inputs as they were (a reference may write only over tensors it made itself)."""
    tensors = [torch.as_tensor(a) for a in inputs]
    before = [t.clone() for t in tensors]
    out = OPS[op].reference(*tensors, **OPS[op].resolve_attrs(attrs))
    for k, (t, was) in enumerate(zip(tensors, before)):
        torch.testing.assert_close(t, was, rtol=0, atol=0, equal_nan=True, msg=f"{op} wrote over its input {k}")
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()


def check(got, want, tol=F64):
    got = np.asarray(got)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, **tol)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- activations

ERF = np.vectorize(math.erf)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def keras_relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """keras.activations.relu, written out for threshold >= 0."""
    negative = np.maximum(threshold - x, 0.0)
    positive = np.where(x > threshold, x, 0.0)
    if max_value is not None:
        positive = np.clip(positive, 0.0, max_value)
    return positive - negative_slope * negative


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


ACTIVATION_CASES = [
    *[
        ("relu", attrs, lambda x, attrs=attrs: keras_relu(x, **attrs))
        for attrs in [{}, {"negative_slope": 0.1}, {"max_value": 6}, {"max_value": 1.5}, {"threshold": 0.5},
                      {"negative_slope": 0.3, "max_value": 2.0, "threshold": 0.5},
                      {"negative_slope": 0.5, "threshold": 1.0}]
    ],
    ("sigmoid", {}, sigmoid),
    ("tanh", {}, lambda x: (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1)),
    ("softmax", {}, lambda x: softmax(x, -1)),
    ("softmax", {"axis": 1}, lambda x: softmax(x, 1)),
    ("softmax", {"axis": 0}, lambda x: softmax(x, 0)),
    ("log_softmax", {}, lambda x: log_softmax(x, -1)),
    ("log_softmax", {"axis": 1}, lambda x: log_softmax(x, 1)),
    ("gelu", {}, lambda x: 0.5 * x * (1 + ERF(x / math.sqrt(2)))),
    ("gelu", {"approximate": True},
     lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    ("elu", {}, lambda x: np.where(x > 0, x, np.exp(x) - 1)),
    ("elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ("selu", {}, lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * (np.exp(x) - 1))),
    ("softplus", {}, lambda x: np.logaddexp(0.0, x)),
    ("softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("leaky_relu", {}, lambda x: np.where(x > 0, x, 0.2 * x)),
    ("leaky_relu", {"negative_slope": 0.05}, lambda x: np.where(x > 0, x, 0.05 * x)),
    ("silu", {}, lambda x: x / (1 + np.exp(-x))),
    ("hard_sigmoid", {}, lambda x: np.clip(x / 6 + 0.5, 0, 1)),
    ("hard_silu", {}, lambda x: x * np.minimum(np.maximum(x + 3, 0), 6) / 6),
    ("mish", {}, lambda x: x * np.tanh(np.logaddexp(0.0, x))),
    ("exponential", {}, np.exp),
    ("linear", {}, lambda x: x),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op, attrs, formula", ACTIVATION_CASES, ids=[f"{c[0]}-{c[1]}" for c in ACTIVATION_CASES])
def test_activation_matches_formula(rng, op, attrs, formula, dtype):
    x = (rng.standard_normal((3, 5, 7)) * 3).astype(dtype)  # reaches relu6's and hard_sigmoid's caps
    check(ref(op, x, **attrs), formula(x.astype("float64")), F64 if dtype == "float64" else F32)
    assert ref(op, x, **attrs).dtype == x.dtype


# ---------------------------------------------------------------- elementwise

BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
          "maximum": np.maximum, "minimum": np.minimum, "zeros_where_masked": lambda a, b: np.where(b != 0, a, 0.0)}


BROADCAST_SHAPES = [((3, 5, 7), (3, 5, 7)), ((3, 5, 7), (7,)), ((3, 1, 7), (5, 1)), ((3, 5), ()), ((), (5,))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_broadcasting(rng, op, shapes):
    a = rng.standard_normal(shapes[0])
    b = rng.uniform(0.5, 2.0, shapes[1]) * rng.choice([-1.0, 1.0], shapes[1])  # a safe divisor
    check(ref(op, a, b), BINARY[op](a, b))


def test_zeros_where_masked_is_zero_at_masked_places_even_for_nan_and_inf(rng):
    a = rng.standard_normal((3, 5, 7))
    a[0, 1, :] = np.nan
    a[1, 2, :] = np.inf
    mask = (rng.uniform(size=(3, 5, 1)) < 0.5).astype(np.float64)
    mask[0, 1], mask[1, 2] = 0.0, 0.0  # the non-finite rows are masked: zeros, as Keras's where gives
    out = ref("zeros_where_masked", a, mask)
    check(out, np.where(mask != 0, a, 0.0))
    assert np.isfinite(out).all()


def test_neg(rng):
    x = rng.standard_normal((3, 5, 7))
    check(ref("neg", x), 0.0 - x)


@pytest.mark.parametrize(
    "src, dtype, expect",
    [
        ("float64", "int32", lambda x: np.trunc(x).astype(np.int32)),  # toward zero, also below 0
        ("float64", "int64", lambda x: np.trunc(x).astype(np.int64)),
        ("float64", "float32", lambda x: x.astype(np.float32)),
        ("float32", "float16", lambda x: x.astype(np.float16)), ("float64", "bool", lambda x: x != 0),
        ("int64", "float64", lambda x: x.astype(np.float64)),
    ],
)
def test_cast(rng, src, dtype, expect):
    x = (rng.standard_normal((3, 5)) * 4).astype(src)
    x.flat[::4] = np.round(x.flat[::4])  # some exact integers and zeros too
    got = ref("cast", x, dtype=dtype)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, expect(x))


@pytest.mark.parametrize("value, dtype", [(2.5, "float32"), (0.1, "float64"), (-7, "int32"), (3, "int64"), (1, None)])
def test_constant(value, dtype):
    got = ref("constant", value=value, **({} if dtype is None else {"dtype": dtype}))
    assert got.shape == () and got.dtype == np.dtype(dtype or "float32")  # float32 by default
    assert got == np.asarray(value, dtype=dtype or "float32")


# ---------------------------------------------------------------- linalg

@pytest.mark.parametrize(
    "sa, sb",
    [((5, 7), (7, 4)), ((3, 5, 7), (7, 4)), ((2, 3, 4, 5), (2, 3, 5, 6)), ((2, 1, 4, 5), (3, 5, 6)),
     ((4, 5), (3, 5, 6))],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matmul(rng, sa, sb, dtype):
    a, b = rng.standard_normal(sa).astype(dtype), rng.standard_normal(sb).astype(dtype)
    want = np.einsum("...ij,...jk->...ik", a.astype("float64"), b.astype("float64"))
    check(ref("matmul", a, b), want, F64 if dtype == "float64" else F32)


@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 6)])
def test_bias_add(rng, shape):
    x, bias = rng.standard_normal(shape), rng.standard_normal(shape[-1])
    check(ref("bias_add", x, bias), x + bias.reshape((1,) * (len(shape) - 1) + (-1,)))


# ---------------------------------------------------------------- reductions

REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max}


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axes", [None, (1,), (0, 2), (-1,), (-1, 0), (0, 1, 2)])
@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduction(rng, op, axes, keepdims):
    x = rng.standard_normal((3, 5, 7))
    check(ref(op, x, axes=axes, keepdims=keepdims), REDUCE[op](x, axis=axes, keepdims=keepdims))


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduction_over_no_axes_is_the_identity(rng, op):
    # numpy and Keras: axis=() reduces nothing; the shape rule also says the shape is kept.
    x = rng.standard_normal((3, 5, 7))
    check(ref(op, x, axes=()), REDUCE[op](x, axis=()))


# ---------------------------------------------------------------- shape ops

@pytest.mark.parametrize(
    "shape_in, target, want",
    [
        ((3, 6, 5), ("N", 30), (3, 30)), ((3, 6, 5), ("N", 2, 3, 5), (3, 2, 3, 5)), ((3, 6, 5), ("N", 5, 6), (3, 5, 6)),
        ((4, 6), (2, "N", 3), (2, 4, 3)),  # "N" is the batch size, 4
        ((4, 6), (2, 12), (2, 12)), ((4, 6), (24,), (24,)),
    ],
)
def test_reshape(rng, shape_in, target, want):
    x = rng.standard_normal(shape_in)
    check(ref("reshape", x, shape=target), x.reshape(want))


@pytest.mark.parametrize("perm", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0), (0, 3, 1, 2)])
def test_transpose(rng, perm):
    x = rng.standard_normal((3, 5, 7, 2)[: len(perm)])
    check(ref("transpose", x, perm=perm), np.transpose(x, perm))


@pytest.mark.parametrize(
    "shapes, axis",
    [([(3, 5, 2), (3, 5, 3)], -1), ([(3, 2, 7), (3, 4, 7), (3, 1, 7)], 1), ([(2, 5), (4, 5)], 0), ([(3, 5)], -1),
     ([(3, 5, 2), (3, 5, 3)], 2)],
)
def test_concat(rng, shapes, axis):
    xs = [rng.standard_normal(s) for s in shapes]
    check(ref("concat", *xs, axis=axis), np.concatenate(xs, axis=axis))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_flip(rng, axis):
    x = rng.normal(size=(3, 4, 5))
    check(ref("flip", x, axis=axis), np.flip(x, axis=axis))


# ---------------------------------------------------------------- conv and pooling

def tf_padding(size, window, stride, dilation, padding):
    """(output size, padding before) by TensorFlow's rules."""
    if padding == "valid":
        return (size - (window - 1) * dilation - 1) // stride + 1, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return out, total // 2


def np_conv2d(x, kernel, strides, padding, dilation, groups):
    n, h, w, _ = x.shape
    kh, kw, cin_g, cout = kernel.shape
    oh, top = tf_padding(h, kh, strides[0], dilation[0], padding)
    ow, left = tf_padding(w, kw, strides[1], dilation[1], padding)
    cout_g = cout // groups
    out = np.zeros((n, oh, ow, cout))
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    r, s = i * strides[0] - top + di * dilation[0], j * strides[1] - left + dj * dilation[1]
                    if not (0 <= r < h and 0 <= s < w):
                        continue  # a zero of the padding
                    for g in range(groups):
                        patch = x[:, r, s, g * cin_g : (g + 1) * cin_g]
                        outs = slice(g * cout_g, (g + 1) * cout_g)
                        out[:, i, j, outs] += patch @ kernel[di, dj, :, outs]
    return out


@pytest.mark.parametrize("kernel_hw", [(3, 3), (2, 4)])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 2)])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (2, 1)])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d(rng, padding, strides, dilation, groups, kernel_hw):
    x = rng.standard_normal((2, 9, 11, 4))
    kernel = rng.standard_normal(kernel_hw + (4 // groups, 6))
    attrs = dict(strides=strides, padding=padding, dilation=dilation, groups=groups)
    check(ref("conv2d", x, kernel, **attrs), np_conv2d(x, kernel, **attrs), dict(rtol=1e-10, atol=1e-11))


def np_pool(x, pool_size, strides, padding, reduce):
    """Windows hold only real pixels: max ignores the padding, mean divides by the real count."""
    n, h, w, c = x.shape
    oh, top = tf_padding(h, pool_size[0], strides[0], 1, padding)
    ow, left = tf_padding(w, pool_size[1], strides[1], 1, padding)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, s0 = i * strides[0] - top, j * strides[1] - left
            window = x[:, max(r0, 0) : r0 + pool_size[0], max(s0, 0) : s0 + pool_size[1], :]
            out[:, i, j, :] = reduce(window.reshape(n, -1, c), axis=1)
    return out


POOL_GEOMETRY = [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 2), (1, 1)), ((2, 3), (3, 2)), ((3, 3), (1, 1))]


@pytest.mark.parametrize("pool_size, strides", POOL_GEOMETRY)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("op, reduce", [("max_pool2d", np.max), ("avg_pool2d", np.mean)])
def test_pooling(rng, op, reduce, padding, pool_size, strides):
    x = rng.standard_normal((2, 9, 11, 3))
    attrs = dict(pool_size=pool_size, strides=strides, padding=padding)
    check(ref(op, x, **attrs), np_pool(x, reduce=reduce, **attrs))


@pytest.mark.parametrize("op, reduce", [("max_pool2d", np.max), ("avg_pool2d", np.mean)])
def test_same_pooling_window_larger_than_image_on_negative_inputs(rng, op, reduce):
    x = -rng.uniform(0.5, 2.0, (2, 2, 3, 2))  # a zero of the padding would win every max
    attrs = dict(pool_size=(3, 3), strides=(1, 1), padding="same")
    check(ref(op, x, **attrs), np_pool(x, reduce=reduce, **attrs))


# ---------------------------------------------------------------- normalization

def along(v, rank, axis):
    shape = [1] * rank
    shape[axis] = v.shape[0]
    return v.reshape(shape)


BN_LAYOUTS = [((3, 5, 7), -1), ((3, 5, 7), 1), ((2, 3, 4, 5), -1)]


def bn_inputs(rng, shape, axis, center, scale):
    c = shape[axis]
    x = rng.standard_normal(shape) * 2 + 0.5
    params = [rng.standard_normal(c), rng.uniform(0.5, 2.0, c)]  # moving mean, moving variance
    params += ([rng.uniform(0.5, 2.0, c)] if scale else []) + ([rng.standard_normal(c)] if center else [])
    return x, params


def bn_apply(x, mean, var, params, axis, eps, center, scale):
    ax, rank = axis % x.ndim, x.ndim
    y = (x - along(mean, rank, ax)) / np.sqrt(along(var, rank, ax) + eps)
    if scale:
        y = y * along(params[0], rank, ax)
    if center:
        y = y + along(params[-1], rank, ax)
    return y


@pytest.mark.parametrize("epsilon", [None, 1e-5])
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape, axis", BN_LAYOUTS)
def test_batch_norm_inference(rng, shape, axis, center, scale, epsilon):
    x, params = bn_inputs(rng, shape, axis, center, scale)
    attrs = dict(axis=axis, center=center, scale=scale, **({} if epsilon is None else {"epsilon": epsilon}))
    want = bn_apply(x, params[0], params[1], params[2:], axis, epsilon or 1e-3, center, scale)  # Keras's eps 1e-3
    check(ref("batch_norm", x, *params, **attrs), want)


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("shape, axis", BN_LAYOUTS)
def test_batch_norm_train(rng, shape, axis, center, scale):
    x, params = bn_inputs(rng, shape, axis, center, scale)
    others = tuple(d for d in range(x.ndim) if d != axis % x.ndim)
    mean = x.sum(axis=others) / (x.size // shape[axis])
    var = ((x - along(mean, x.ndim, axis % x.ndim)) ** 2).sum(axis=others) / (x.size // shape[axis])  # biased
    y, got_mean, got_var = ref("batch_norm_train", x, *params, axis=axis, center=center, scale=scale)
    check(got_mean, mean)
    check(got_var, var)
    check(y, bn_apply(x, mean, var, params[2:], axis, 1e-3, center, scale))


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("axes", [(-1,), (1, 2), (1,), (2, 1)])
def test_layer_norm(rng, axes, center, scale):
    x = rng.standard_normal((3, 5, 7)) * 3 + 1
    norm = tuple(sorted(a % 3 for a in axes))
    param_shape = tuple(x.shape[a] for a in norm)
    gamma, beta = rng.uniform(0.5, 2.0, param_shape), rng.standard_normal(param_shape)
    params = ([gamma] if scale else []) + ([beta] if center else [])
    mean = x.mean(axis=norm, keepdims=True)
    want = (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=norm, keepdims=True) + 1e-3)
    placed = [slice(None) if d in norm else None for d in range(3)]  # parameters back into place
    if scale:
        want = want * gamma[tuple(placed)]
    if center:
        want = want + beta[tuple(placed)]
    check(ref("layer_norm", x, *params, axes=axes, center=center, scale=scale), want)


# ---------------------------------------------------------------- dropout

def test_dropout_is_identity_outside_training(rng):
    x = rng.standard_normal((3, 5, 7))
    np.testing.assert_array_equal(ref("dropout", x, rate=0.5), x)
    np.testing.assert_array_equal(ref("dropout", x, rate=0.5, training=False, seed=7), x)
    np.testing.assert_array_equal(ref("dropout", x, rate=0.0, training=True), x)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rate", [0.1, 0.3, 0.75])
def test_dropout_in_training(rng, rate, dtype):
    x = rng.uniform(1.0, 2.0, (200, 301)).astype(dtype)
    y = ref("dropout", x, rate=rate, seed=11, training=True)
    assert y.dtype == x.dtype
    kept = y != 0
    check(y[kept], x[kept] / (1.0 - rate), F64 if dtype == "float64" else F32)
    assert abs((~kept).mean() - rate) < 0.01  # ~5 standard deviations at this size
    np.testing.assert_array_equal(ref("dropout", x, rate=rate, seed=11, training=True), y)  # same seed, same mask
    assert not np.array_equal(ref("dropout", x, rate=rate, seed=12, training=True) != 0, kept)


# ---------------------------------------------------------------- embedding

@pytest.mark.parametrize("ids_shape, ids_dtype", [((3, 6), "int64"), ((7,), "int32"), ((2, 3, 4), "int64")])
def test_embedding(rng, ids_shape, ids_dtype):
    table = rng.standard_normal((10, 4))
    ids = rng.integers(0, 10, ids_shape).astype(ids_dtype)
    ids.flat[0], ids.flat[-1] = 0, 9  # both ends of the table
    check(ref("embedding", ids, table), table[ids])


@pytest.mark.parametrize("bad", [10, -1, 1000])
def test_embedding_out_of_range_ids_raise(rng, bad):
    ids = rng.integers(0, 10, (3, 6))
    ids[1, 2] = bad
    with pytest.raises(KcompError, match=str(bad)):
        ref("embedding", ids, rng.standard_normal((10, 4)))


# ---------------------------------------------------------------- recurrent

def torch_lstm(x, kernel, recurrent, bias, go_backwards):
    """torch.nn.LSTM with Keras's weights: same gate order (i, f, c/g, o), transposed matrices."""
    lstm = torch.nn.LSTM(x.shape[2], recurrent.shape[0], batch_first=True, bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(kernel.T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(recurrent.T))
        if bias is not None:
            lstm.bias_ih_l0.copy_(torch.from_numpy(bias))
            lstm.bias_hh_l0.zero_()
        seq, (h, c) = lstm(torch.from_numpy(np.ascontiguousarray(x[:, ::-1] if go_backwards else x)))
    return seq.numpy(), h[0].numpy(), c[0].numpy()


def recurrent_weights(rng, features, units, gates, bias_shape):
    kernel = rng.standard_normal((features, gates * units)) * 0.5
    return kernel, rng.standard_normal((units, gates * units)) * 0.5, rng.standard_normal(bias_shape) * 0.5


def np_loop(x, go_backwards, step, states):
    """Run `step(x_t, states)` over time; returns the sequence of h in processing order and the states."""
    outputs = []
    for t in range(x.shape[1])[::-1] if go_backwards else range(x.shape[1]):
        states = step(x[:, t], states)
        outputs.append(states[0])
    return np.stack(outputs, axis=1), states


FLAGS = [(rs, gb, ub) for rs in (False, True) for gb in (False, True) for ub in (True, False)]
FLAG_IDS = [f"seq{int(rs)}-back{int(gb)}-bias{int(ub)}" for rs, gb, ub in FLAGS]


@pytest.mark.parametrize("return_sequences, go_backwards, use_bias", FLAGS, ids=FLAG_IDS)
def test_lstm_matches_torch_lstm(rng, return_sequences, go_backwards, use_bias):
    x = rng.standard_normal((3, 6, 5))
    kernel, recurrent, bias = recurrent_weights(rng, 5, 4, 4, (16,))
    flags = dict(use_bias=use_bias, return_sequences=return_sequences, go_backwards=go_backwards)
    out, h, c = ref("lstm", x, kernel, recurrent, *([bias] if use_bias else []), **flags)
    seq, want_h, want_c = torch_lstm(x, kernel, recurrent, bias if use_bias else None, go_backwards)
    check(out, seq if return_sequences else seq[:, -1])  # go_backwards: in processing order, as Keras
    check(h, want_h)
    check(c, want_c)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("return_sequences, go_backwards, use_bias", FLAGS, ids=FLAG_IDS)
def test_gru_matches_keras_formulas(rng, return_sequences, go_backwards, use_bias, reset_after):
    u = 4
    x = rng.standard_normal((3, 6, 5))
    kernel, recurrent, bias = recurrent_weights(rng, 5, u, 3, (2, 3 * u) if reset_after else (3 * u,))
    if not use_bias:
        input_bias = recurrent_bias = np.zeros(3 * u)
    elif reset_after:
        input_bias, recurrent_bias = bias[0], bias[1]  # row 0 for the input, row 1 for the recurrence
    else:
        input_bias, recurrent_bias = bias, np.zeros(3 * u)

    def step(x_t, states):
        (h,) = states
        x_z, x_r, x_h = np.split(x_t @ kernel + input_bias, 3, axis=-1)
        z = sigmoid(x_z + h @ recurrent[:, :u] + recurrent_bias[:u])
        r = sigmoid(x_r + h @ recurrent[:, u : 2 * u] + recurrent_bias[u : 2 * u])
        if reset_after:
            candidate = np.tanh(x_h + r * (h @ recurrent[:, 2 * u :] + recurrent_bias[2 * u :]))
        else:
            candidate = np.tanh(x_h + (r * h) @ recurrent[:, 2 * u :])
        return (z * h + (1 - z) * candidate,)

    seq, (h,) = np_loop(x, go_backwards, step, (np.zeros((3, u)),))
    flags = dict(use_bias=use_bias, return_sequences=return_sequences, go_backwards=go_backwards)
    out, got_h = ref("gru", x, kernel, recurrent, *([bias] if use_bias else []), reset_after=reset_after, **flags)
    check(out, seq if return_sequences else h)
    check(got_h, h)


CELL_ACTIVATIONS = {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda v: np.maximum(v, 0.0)}


@pytest.mark.parametrize("activation", sorted(CELL_ACTIVATIONS))
@pytest.mark.parametrize("return_sequences, go_backwards, use_bias", FLAGS, ids=FLAG_IDS)
def test_simple_rnn(rng, return_sequences, go_backwards, use_bias, activation):
    fn = CELL_ACTIVATIONS[activation]
    x = rng.standard_normal((3, 6, 5))
    kernel, recurrent, bias = recurrent_weights(rng, 5, 4, 1, (4,))
    b = bias if use_bias else 0.0
    seq, (h,) = np_loop(x, go_backwards, lambda x_t, s: (fn(x_t @ kernel + b + s[0] @ recurrent),), (np.zeros((3, 4)),))
    flags = dict(use_bias=use_bias, return_sequences=return_sequences, go_backwards=go_backwards)
    out, got_h = ref("simple_rnn", x, kernel, recurrent, *([bias] if use_bias else []), activation=activation, **flags)
    check(out, seq if return_sequences else h)
    check(got_h, h)


def test_rsqrt(rng):
    x = rng.uniform(0.1, 4.0, size=(3, 5))
    check(ref("rsqrt", x), 1.0 / np.sqrt(x))


def test_kernel_runs_its_body(rng):
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("body")
    x, bias = b.input((None, 5), "float64", ""), b.input((5,), "float64", "")
    body = b.finish([b.emit1("tanh", [b.emit1("add", [x, bias])])])
    xs, bs = rng.normal(size=(3, 5)), rng.normal(size=5)
    check(ref("kernel", xs, bs, template="pointwise", body=body, roles=("anchor", "epilogue")), np.tanh(xs + bs))


def test_every_op_has_a_reference_test():
    tested = {case[0] for case in ACTIVATION_CASES} | set(BINARY) | set(REDUCE) | {
        "neg", "clip", "cast", "constant", "matmul", "bias_add", "reshape", "transpose", "concat", "flip", "conv2d", "max_pool2d",
        "avg_pool2d", "batch_norm", "batch_norm_train", "layer_norm", "dropout", "embedding",
        "lstm", "gru", "simple_rnn", "rsqrt", "kernel",
    }
    tested |= NN_GRAD_OPS  # conv_grad.py's backward ops (their block is at the end of this file)
    tested |= GRAD_SUPPORT_OPS  # grad_support.py's ops (their block is at the end of this file)
    tested |= SCAN_OPS  # recurrent_scan.py's ops (their block follows grad_support's)
    tested |= LOSS_MATH_OPS  # losses' and metrics' ops (their block is at the end of this file)
    tested |= {"replica_sum"}  # the identity, and its gradient against autograd: tests/test_distributed_batchnorm.py
    tested |= {"all_reduce"}  # the identity, and the sums in jobs of several processes: tests/test_distributed_fused.py
    tested |= {"shift"}  # its reference against slicing and concatenation: tests/test_shift.py
    tested |= {"resize", "resize_grad", "constant_array"}  # against numpy: tests/test_preprocessing_layers.py
    # against Keras: tests/test_augmentation.py; the gradient against autograd: test_affine_transform_kernel.py
    tested |= {"augment_params", "affine_transform", "affine_transform_grad", "random_brightness"}
    tested |= {"random_contrast"}  # against Keras fed augment_params' draws: tests/test_augmentation*.py
    assert tested == set(OPS)


# ---------------------------------------------------------------- backward ops of conv2d, pooling, embedding,
# batch statistics and recurrent layers (kcomp/ir/ops/conv_grad.py, gather.py, recurrent_grad.py): against numpy loops, numpy scatter-adds,
# torch.nn modules' autograd and central differences, none of which the references use.

NN_GRAD_OPS = {
    "conv2d_backprop_input", "conv2d_backprop_filter", "max_pool2d_grad", "avg_pool2d_grad", "embedding_grad",
    "lstm_grad", "gru_grad", "simple_rnn_grad", "sort_ids", "embedding_grad_chunks",
    "embedding_grad_sorted",
}


def tf_same_pads(size, window, stride, dilation=1):
    """TensorFlow's documented "same" padding: ceil(size / stride) outputs, the odd pixel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (window - 1) * dilation + 1 - size, 0)
    return out, (total // 2, total - total // 2)


def window_geometry(size, window, stride, dilation, padding):
    """(outputs, (pad before, pad after)) along one axis."""
    if padding == "same":
        return tf_same_pads(size, window, stride, dilation)
    return (size - (window - 1) * dilation - 1) // stride + 1, (0, 0)


def np_conv_grads(x, w, dy, strides, padding, dilation, groups):
    """dx and dw of a grouped NHWC convolution, one (output pixel, kernel tap) at a time."""
    n, h, wd, c = x.shape
    kh, kw, cg, f = w.shape
    fg = f // groups
    (oh, (pt, pb)), (ow, (pl, pr)) = (
        window_geometry(size, k, s, d, padding) for size, k, s, d in zip((h, wd), (kh, kw), strides, dilation)
    )
    assert dy.shape == (n, oh, ow, f)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for bb in range(kw):
                    r, q = i * strides[0] + a * dilation[0], j * strides[1] + bb * dilation[1]
                    for g in range(groups):
                        ins, outs = slice(g * cg, (g + 1) * cg), slice(g * fg, (g + 1) * fg)
                        dw[a, bb, :, outs] += xp[:, r, q, ins].T @ dy[:, i, j, outs]
                        dxp[:, r, q, ins] += dy[:, i, j, outs] @ w[a, bb, :, outs].T
    return dxp[:, pt : pt + h, pl : pl + wd], dw


CONV_GRAD_CASES = [
    ((3, 9, 11, 3), (3, 3, 3, 5), {}),
    ((3, 9, 11, 3), (2, 2, 3, 5), {"strides": (2, 2)}),
    ((3, 9, 11, 3), (2, 4, 3, 5), {"strides": (2, 1), "padding": "same"}),
    ((2, 9, 11, 3), (4, 3, 3, 5), {"strides": (3, 2), "padding": "same"}),
    ((2, 9, 11, 3), (3, 3, 3, 5), {"dilation": (2, 2)}),
    ((2, 9, 11, 3), (3, 2, 3, 5), {"dilation": (2, 1), "strides": (1, 2), "padding": "same"}),
    ((2, 9, 11, 4), (3, 3, 2, 6), {"groups": 2, "strides": (2, 2), "padding": "same"}),
    ((2, 9, 11, 6), (1, 3, 2, 9), {"groups": 3}),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_GRAD_CASES, ids=[f"{w}-{a}" for _, w, a in CONV_GRAD_CASES])
def test_conv2d_backprop_input_and_filter(rng, x_shape, w_shape, attrs):
    full = OPS["conv2d_backprop_input"].resolve_attrs({"input_size": x_shape[1:3], **attrs})
    strides, padding, dilation, groups = full["strides"], full["padding"], full["dilation"], full["groups"]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    (oh, _), (ow, _) = (
        window_geometry(size, k, s, d, padding) for size, k, s, d in zip(x_shape[1:3], w_shape[:2], strides, dilation)
    )
    dy = rng.standard_normal((x_shape[0], oh, ow, w_shape[3]))
    want_dx, want_dw = np_conv_grads(x, w, dy, strides, padding, dilation, groups)
    check(ref("conv2d_backprop_input", dy, w, input_size=x_shape[1:3], **attrs), want_dx)
    check(ref("conv2d_backprop_filter", x, dy, kernel_size=w_shape[:2], **attrs), want_dw)


def np_pool_grad(x, dy, pool_size, strides, padding, reduce):
    """Max: each window's dy to its first maximum (row-major); avg: dy / real pixels to each real pixel."""
    n, h, w, c = x.shape
    (oh, (pt, _)), (ow, (pl, _)) = (window_geometry(s_, k, st, 1, padding) for s_, k, st in zip((h, w), pool_size, strides))
    dx = np.zeros_like(x)
    for i in range(oh):
        for j in range(ow):
            rows = range(max(i * strides[0] - pt, 0), min(i * strides[0] - pt + pool_size[0], h))
            cols = range(max(j * strides[1] - pl, 0), min(j * strides[1] - pl + pool_size[1], w))
            if reduce == "avg":
                dx[:, rows.start : rows.stop, cols.start : cols.stop] += dy[:, i, j][:, None, None] / (len(rows) * len(cols))
                continue
            window = x[:, rows.start : rows.stop, cols.start : cols.stop].reshape(n, -1, c)
            first = window.argmax(axis=1)  # numpy's argmax: the first maximum
            for b_ in range(n):
                for ch in range(c):
                    r, q = divmod(first[b_, ch], len(cols))
                    dx[b_, rows.start + r, cols.start + q, ch] += dy[b_, i, j, ch]
    return dx


GRAD_POOLS = [
    {"pool_size": (3, 3), "strides": (2, 2)},
    {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"},
    {"pool_size": (2, 2), "strides": (2, 2), "padding": "same"},
    {"pool_size": (2, 3), "strides": (3, 1)},
    {"pool_size": (3, 2), "strides": (1, 1), "padding": "same"},
]


@pytest.mark.parametrize("attrs", GRAD_POOLS, ids=str)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool2d_grad(rng, attrs, ties):
    x = rng.integers(0, 3, (2, 9, 11, 3)).astype(np.float64) if ties else rng.standard_normal((2, 9, 11, 3))
    y = ref("max_pool2d", x, **attrs)
    dy = rng.standard_normal(y.shape)
    got = ref("max_pool2d_grad", x, dy, **attrs)
    check(got, np_pool_grad(x, dy, attrs["pool_size"], attrs["strides"], attrs.get("padding", "valid"), "max"))
    xt = torch.as_tensor(x).requires_grad_(True)  # torch's own choice among ties
    OPS["max_pool2d"].reference(xt, **OPS["max_pool2d"].resolve_attrs(attrs)).backward(torch.as_tensor(dy))
    check(got, xt.grad.numpy())


@pytest.mark.parametrize("attrs", GRAD_POOLS, ids=str)
def test_avg_pool2d_grad(rng, attrs):
    x = rng.standard_normal((2, 9, 11, 3))
    dy = rng.standard_normal(ref("avg_pool2d", x, **attrs).shape)
    got = ref("avg_pool2d_grad", dy, input_size=(9, 11), **attrs)
    check(got, np_pool_grad(x, dy, attrs["pool_size"], attrs["strides"], attrs.get("padding", "valid"), "avg"))


@pytest.mark.parametrize("ids_shape, ids_dtype", [((3, 6), "int64"), ((7,), "int32"), ((2, 3, 4), "int64")])
def test_embedding_grad(rng, ids_shape, ids_dtype):
    ids = rng.integers(0, 4, ids_shape).astype(ids_dtype)  # repeated ids; rows 4..9 unused
    dy = rng.standard_normal(ids_shape + (5,))
    want = np.zeros((10, 5))
    np.add.at(want, ids.reshape(-1), dy.reshape(-1, 5))
    got = ref("embedding_grad", ids, dy, input_dim=10)
    check(got, want)
    assert not got[4:].any()


@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
def test_sort_ids_is_a_stable_sort_of_the_flat_ids(rng, ids_dtype):
    ids = rng.integers(0, 4, (3, 7)).astype(ids_dtype)  # many repeats: the order among equals shows
    values, positions = ref("sort_ids", ids)
    assert values.shape == positions.shape == ids.shape and values.dtype == ids.dtype and positions.dtype == np.int64
    order = np.argsort(ids.reshape(-1), kind="stable")
    np.testing.assert_array_equal(positions.reshape(-1), order)
    np.testing.assert_array_equal(values.reshape(-1), ids.reshape(-1)[order])


@pytest.mark.parametrize("chunk", [1, 4, 128])
def test_embedding_grad_chunks_then_sorted_is_embedding_grad(rng, chunk):
    ids = rng.integers(0, 4, (3, 7))
    dy = rng.standard_normal((3, 7, 5))
    want = np.zeros((10, 5))
    np.add.at(want, ids.reshape(-1), dy.reshape(-1, 5))
    sorted_ids, positions = ref("sort_ids", ids)
    sums = ref("embedding_grad_chunks", sorted_ids, positions, dy, chunk=chunk)
    check(ref("embedding_grad_sorted", sorted_ids, sums, input_dim=10, chunk=chunk, dtype="float64"), want)
    # each sum: dy's rows from its segment's start (a new id, or a multiple of chunk) up to it
    terms, flat = dy.reshape(-1, 5)[positions.reshape(-1)], sorted_ids.reshape(-1)
    for j in range(flat.size):
        first = j
        while first > 0 and flat[first - 1] == flat[j] and first % chunk:
            first -= 1
        check(sums.reshape(-1, 5)[j], terms[first:j + 1].sum(axis=0))


def torch_rnn_grads(module, x, weights, go_backwards, return_sequences, cotangents):
    """Keras-layout gradients through a torch.nn recurrent module: (dx, dkernel, drecurrent, dbias)."""
    kernel, recurrent, bias = (torch.from_numpy(w.T.copy()).requires_grad_(True) for w in weights)
    xt = torch.from_numpy(x).requires_grad_(True)
    params = {"weight_ih_l0": kernel, "weight_hh_l0": recurrent, "bias_ih_l0": bias,
              "bias_hh_l0": torch.zeros_like(bias)}
    seq, states = torch.func.functional_call(module, params, (xt.flip(1) if go_backwards else xt,))
    states = states if isinstance(states, tuple) else (states,)
    outs = [seq if return_sequences else seq[:, -1], *(s[0] for s in states)]
    loss = sum((o * torch.from_numpy(c)).sum() for o, c in zip(outs, cotangents) if c is not None)
    dx, dkernel, drecurrent, dbias = torch.autograd.grad(loss, [xt, kernel, recurrent, bias])
    return [dx.numpy(), dkernel.T.numpy(), drecurrent.T.numpy(), dbias.numpy()]  # back to Keras's layouts


@pytest.mark.parametrize("grad_outputs", [(0,), (1, 2), (0, 1, 2), (2,)])
@pytest.mark.parametrize("return_sequences, go_backwards", [(False, False), (True, True), (True, False)])
def test_lstm_grad_matches_torch_lstm(rng, grad_outputs, return_sequences, go_backwards):
    x = rng.standard_normal((3, 5, 4))
    kernel, recurrent, bias = rng.standard_normal((4, 12)) * 0.5, rng.standard_normal((3, 12)) * 0.5, rng.standard_normal(12)
    flags = dict(return_sequences=return_sequences, go_backwards=go_backwards)
    outs = ref("lstm", x, kernel, recurrent, bias, **flags)
    cotangents = [rng.standard_normal(o.shape) if i in grad_outputs else None for i, o in enumerate(outs)]
    got = ref("lstm_grad", x, kernel, recurrent, bias, *(c for c in cotangents if c is not None),
              grad_outputs=grad_outputs, **flags)
    module = torch.nn.LSTM(4, 3, batch_first=True, dtype=torch.float64)
    want = torch_rnn_grads(module, x, (kernel, recurrent, bias), go_backwards, return_sequences, cotangents)
    for g, w in zip(got, want):
        check(g, w)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_grad_matches_torch_rnn(rng, activation):
    x = rng.standard_normal((3, 5, 4))
    kernel, recurrent, bias = rng.standard_normal((4, 3)) * 0.5, rng.standard_normal((3, 3)) * 0.5, rng.standard_normal(3)
    flags = dict(return_sequences=True, go_backwards=True, activation=activation)
    outs = ref("simple_rnn", x, kernel, recurrent, bias, **flags)
    cotangents = [rng.standard_normal(o.shape) for o in outs]
    got = ref("simple_rnn_grad", x, kernel, recurrent, bias, *cotangents, grad_outputs=(0, 1), **flags)
    module = torch.nn.RNN(4, 3, batch_first=True, nonlinearity=activation, dtype=torch.float64)
    want = torch_rnn_grads(module, x, (kernel, recurrent, bias), True, True, cotangents)
    for g, w in zip(got, want):
        check(g, w)


def central_differences(f, arrays, eps=1e-6):
    """d f / d each array, one element at a time (f returns a float)."""
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for k in range(a.size):
            saved = a.flat[k]
            a.flat[k] = saved + eps
            up = f()
            a.flat[k] = saved - eps
            down = f()
            a.flat[k] = saved
            g.flat[k] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("reset_after, use_bias, grad_outputs", [(True, True, (0, 1)), (False, True, (1,)),
                                                                 (False, False, (0,)), (True, False, (0, 1))])
def test_gru_grad_matches_central_differences(rng, reset_after, use_bias, grad_outputs):
    x = rng.standard_normal((2, 4, 3))
    kernel, recurrent = rng.standard_normal((3, 6)) * 0.5, rng.standard_normal((2, 6)) * 0.5
    bias = rng.standard_normal((2, 6) if reset_after else (6,)) * 0.5
    if not use_bias:
        bias[...] = 0.0  # the op then returns the gradient at a zero bias
    flags = dict(reset_after=reset_after, return_sequences=True, go_backwards=True)
    outs = ref("gru", x, kernel, recurrent, bias, **flags)
    cotangents = [rng.standard_normal(o.shape) for o in outs]

    def loss():  # with use_bias=False the bias is zero: the same outputs
        outs = ref("gru", x, kernel, recurrent, bias, use_bias=True, **flags)
        return sum(float((outs[i] * cotangents[i]).sum()) for i in grad_outputs)

    want = central_differences(loss, [x, kernel, recurrent, bias])
    args = (x, kernel, recurrent) + ((bias,) if use_bias else ())
    got = ref("gru_grad", *args, *(cotangents[i] for i in grad_outputs), use_bias=use_bias,
              grad_outputs=grad_outputs, **flags)
    for g, w in zip(got, want):
        check(g, w, dict(rtol=1e-6, atol=1e-8))


def test_recurrent_grad_runs_under_inference_mode(rng):
    """Executors may run a step under torch.inference_mode; the autograd inside the reference still works."""
    x, kernel, recurrent = rng.standard_normal((2, 4, 3)), rng.standard_normal((3, 8)), rng.standard_normal((2, 8))
    dh = rng.standard_normal((2, 2))
    want = ref("lstm_grad", x, kernel, recurrent, dh, use_bias=False, grad_outputs=(1,))
    with torch.inference_mode():
        args = [torch.as_tensor(a) for a in (x, kernel, recurrent, dh)]
        got = OPS["lstm_grad"].reference(*args, **OPS["lstm_grad"].resolve_attrs({"use_bias": False, "grad_outputs": (1,)}))
    for g, w in zip(got, want):
        check(g.numpy(), w)
# ---------------------------------------------------------------- end of the conv_grad.py block


# ---------------------------------------------------------------- ops gradients are built from
# (kcomp/ir/ops/grad_support.py): 0/1 masks, broadcast_like, count, slice, pad, erf, against numpy and math.erf.

GRAD_SUPPORT_OPS = {"greater", "greater_equal", "equal", "threshold_grad", "is_finite", "broadcast_like", "count", "slice", "pad", "erf"}
SCAN_OPS = {"lstm_scan", "lstm_scan_grad", "gru_scan", "gru_scan_grad", "simple_rnn_scan",
            "simple_rnn_scan_grad"}  # their block follows


@pytest.mark.parametrize("save", [False, True])
def test_lstm_scan_is_the_lstm_after_its_projection(rng, save):
    """lstm_scan on x @ kernel + bias gives the lstm op's sequence and last c (and with save,
    every c_t: the lstm's c of each prefix), in float64."""
    x, kernel = rng.normal(size=(2, 5, 3)), rng.normal(size=(3, 16)) * 0.5
    recurrent, bias = rng.normal(size=(4, 16)) * 0.5, rng.normal(size=16) * 0.5
    flags = dict(return_sequences=True, go_backwards=False)
    seq, h, c = ref("lstm", x, kernel, recurrent, bias, **flags)
    outs = ref("lstm_scan", x @ kernel + bias, recurrent, save=save)
    check(outs[0], seq)
    if save:
        check(outs[1][:, -1], c)
        check(outs[1][:, 2], ref("lstm", x[:, :3], kernel, recurrent, bias, **flags)[2])
        assert outs[2].shape == (2, 5, 16)
    else:
        check(outs[1], c)


def test_lstm_scan_grad_is_autograd_through_the_scan(rng):
    xw = torch.tensor(rng.normal(size=(2, 5, 16)), requires_grad=True)
    u = torch.tensor(rng.normal(size=(4, 16)) * 0.5)
    h_seq, c_seq, gates = OPS["lstm_scan"].reference(xw, u, save=True)
    d_seq, d_h, d_c = (torch.tensor(rng.normal(size=s)) for s in ((2, 5, 4), (2, 4), (2, 4)))
    (want,) = torch.autograd.grad([h_seq, h_seq[:, -1], c_seq[:, -1]], [xw], [d_seq, d_h, d_c])
    got = ref("lstm_scan_grad", u, c_seq.detach(), gates.detach(), d_seq, d_h, d_c, has_dseq=True, has_dh=True, has_dc=True)
    check(got, want.numpy())


# bias: a non-zero bias (with reset_after its second row is gru_scan's recurrent bias input; without, the
# bias is the projection's alone)
GRU_SCAN_CASES = [dict(reset_after=True, bias=True), dict(reset_after=True, bias=False), dict(reset_after=False, bias=False)]


def _gru_weights(rng, reset_after, bias, units=4):
    kernel, recurrent = rng.normal(size=(3, 3 * units)) * 0.5, rng.normal(size=(units, 3 * units)) * 0.5
    shape = (2, 3 * units) if reset_after else (3 * units,)
    return kernel, recurrent, rng.normal(size=shape) * 0.5 if bias else np.zeros(shape)


@pytest.mark.parametrize("case", [*GRU_SCAN_CASES, dict(reset_after=False, bias=True)],
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gru_scan_is_the_gru_after_its_projection(rng, case):
    """gru_scan on x @ kernel + the input bias (with reset_after: the bias's first row, the second
    the scan's recurrent bias) gives the gru op's sequence in float64; save adds what the backward reads."""
    x = rng.normal(size=(2, 5, 3))
    kernel, recurrent, bias = _gru_weights(rng, **case)
    reset_after = case["reset_after"]
    seq, h = ref("gru", x, kernel, recurrent, bias, return_sequences=True, reset_after=reset_after)
    if reset_after:  # Keras's two rows: the input projection's, and the recurrent product's (the scan's input)
        input_bias, recurrent_bias = bias[0], [bias[1]] if case["bias"] else []
    else:
        input_bias, recurrent_bias = bias, []
    xw = x @ kernel + input_bias
    check(ref("gru_scan", xw, recurrent, *recurrent_bias, reset_after=reset_after), seq)
    got, saved = ref("gru_scan", xw, recurrent, *recurrent_bias, reset_after=reset_after, save=True)
    check(got, seq)
    z, c = saved[..., :4], saved[..., 8:12]
    check(z * np.concatenate([np.zeros((2, 1, 4)), seq[:, :-1]], axis=1) + (1 - z) * c, seq)  # h = z h_prev + (1 - z) c
    assert saved.shape == (2, 5, (16 if reset_after else 12))


@pytest.mark.parametrize("case", GRU_SCAN_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_gru_scan_grad_is_autograd_through_the_scan(rng, case):
    """dxw against autograd in float64; with reset_after the recurrent product's gradient gives the
    recurrent kernel's (h_prev^T d) and the recurrent bias's (its sum), as the decompose pass uses it;
    without, d U is h_prev^T dxw for the z and r blocks and (r h_prev)^T dxw for the h block."""
    reset_after, units = case["reset_after"], 4
    xw = torch.tensor(rng.normal(size=(2, 5, 3 * units)), requires_grad=True)
    u = torch.tensor(rng.normal(size=(units, 3 * units)) * 0.5, requires_grad=True)
    bias = [torch.tensor(rng.normal(size=3 * units), requires_grad=True)] if case["bias"] else []
    h_seq, saved = OPS["gru_scan"].reference(xw, u, *bias, reset_after=reset_after, save=True)
    d_seq, d_h = torch.tensor(rng.normal(size=(2, 5, units))), torch.tensor(rng.normal(size=(2, units)))
    want = torch.autograd.grad([h_seq, h_seq[:, -1]], [xw, u, *bias], [d_seq, d_h])
    got = OPS["gru_scan_grad"].reference(u.detach(), h_seq.detach(), saved.detach(), d_seq, d_h, reset_after=reset_after,
                                         has_dseq=True, has_dh=True)
    got = got if reset_after else (got,)
    check(got[0].numpy(), want[0].numpy())
    h_prev = torch.cat([torch.zeros(2, 1, units, dtype=torch.float64), h_seq.detach()[:, :-1]], dim=1)
    if reset_after:
        d_u = torch.einsum("btu,btg->ug", h_prev, got[1])
    else:
        reset_h = saved.detach()[..., units:2 * units] * h_prev
        d_u = torch.cat([torch.einsum("btu,btg->ug", h_prev, got[0][..., :2 * units]),
                         torch.einsum("btu,btg->ug", reset_h, got[0][..., 2 * units:])], dim=1)
    check(d_u.numpy(), want[1].numpy())
    if bias:
        check(got[1].sum((0, 1)).numpy(), want[2].numpy())


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_scan_and_its_grad(rng, activation):
    """simple_rnn_scan on x @ kernel + bias is the simple_rnn op's sequence; its grad is autograd's, in float64."""
    x, kernel = rng.normal(size=(2, 5, 3)), rng.normal(size=(3, 4))
    recurrent, bias = rng.normal(size=(4, 4)) * 0.5, rng.normal(size=4) * 0.5
    seq, _ = ref("simple_rnn", x, kernel, recurrent, bias, activation=activation, return_sequences=True)
    check(ref("simple_rnn_scan", x @ kernel + bias, recurrent, activation=activation), seq)
    xw = torch.tensor(x @ kernel + bias, requires_grad=True)
    h_seq = OPS["simple_rnn_scan"].reference(xw, torch.tensor(recurrent), activation=activation)
    assert (h_seq == 0).any() == (activation == "relu")  # relu's kink is reached
    d_seq, d_h = torch.tensor(rng.normal(size=(2, 5, 4))), torch.tensor(rng.normal(size=(2, 4)))
    for has_dseq, has_dh in ((True, True), (True, False), (False, True)):
        outputs = [h_seq] * has_dseq + [h_seq[:, -1]] * has_dh
        grads = [d_seq] * has_dseq + [d_h] * has_dh
        (want,) = torch.autograd.grad(outputs, [xw], grads, retain_graph=True)
        got = ref("simple_rnn_scan_grad", recurrent, h_seq.detach(), *grads, activation=activation, has_dseq=has_dseq,
                  has_dh=has_dh)
        check(got, want.numpy())


@pytest.mark.parametrize("shapes", [((3, 5, 7), (3, 5, 7)), ((3, 5, 7), (7,)), ((3, 1, 7), (5, 1)), ((), (5,))])
@pytest.mark.parametrize("dtype", ["float64", "float32", "int32"])
def test_comparison_masks(rng, shapes, dtype):
    a = rng.integers(-2, 3, shapes[0]).astype(dtype)  # small integers: many ties
    b = rng.integers(-2, 3, shapes[1]).astype(dtype)
    for op, fn in (("greater", np.greater), ("greater_equal", np.greater_equal), ("equal", np.equal)):
        got = ref(op, a, b)
        assert got.dtype == np.dtype(dtype)  # a 0/1 mask in the inputs' dtype, not bool
        np.testing.assert_array_equal(got, fn(a, b).astype(dtype))


def test_comparison_masks_are_0_where_an_input_is_nan():
    a = np.array([np.nan, 1.0, np.nan, -np.inf, np.inf])
    b = np.array([0.0, np.nan, np.nan, -np.inf, np.inf])
    for op in ("greater", "greater_equal", "equal"):
        assert ref(op, a, b)[:3].tolist() == [0.0, 0.0, 0.0]
    assert ref("greater_equal", a, b)[3:].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("threshold", [0.0, 0.5, -1.0])
def test_threshold_grad_drops_g_at_and_below_the_threshold_even_inf_and_keeps_it_at_nan(rng, threshold):
    """torch's threshold_backward (relu's gradient): g * (x > t) would give NaN where g is inf or NaN."""
    g, x = rng.standard_normal((3, 5, 7)), rng.standard_normal((3, 5, 7))
    x.flat[:8] = [0.0, 0.5, -1.0, -np.inf, np.inf, np.nan, -3.0, -3.0]
    g.flat[:8] = [np.inf, np.nan, -np.inf, np.inf, 2.0, 3.0, np.nan, np.inf]
    check(ref("threshold_grad", g, x, threshold=threshold), np.where(x <= threshold, 0.0, g))  # NaN <= t: False


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-0.5, 0.5), (1.0, 0.0)])
def test_clip_is_torch_clamp(rng, low, high):
    x = rng.standard_normal((3, 5, 7))
    x.flat[:5] = [np.nan, np.inf, -np.inf, low, high]
    check(ref("clip", x, low=low, high=high), np.minimum(np.maximum(x, low), high))  # all high where low > high


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_is_finite(rng, dtype):
    """1 where finite, 0 at inf, -inf and NaN, in the input's dtype (a float16 65504 is finite, 1e5 is not)."""
    x = torch.as_tensor(rng.standard_normal((4, 9))).to(getattr(torch, dtype))
    x[0, :4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0])
    got = OPS["is_finite"].reference(x)
    assert got.dtype == x.dtype
    want = np.ones((4, 9))
    want[0, :3] = 0
    np.testing.assert_array_equal(got.double().numpy(), want)
    assert OPS["is_finite"].reference(torch.tensor([65504.0, 1e5]).half()).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("small, like", [((5, 1), (3, 5, 7)), ((), (3, 5)), ((1, 7), (4, 7)), ((4, 7), (4, 7))])
def test_broadcast_like(rng, small, like):
    g, x = rng.standard_normal(small), rng.standard_normal(like)
    got = OPS["broadcast_like"].reference(torch.as_tensor(g), torch.as_tensor(x))
    check(got.numpy(), np.broadcast_to(g, like))
    assert got.is_contiguous()


@pytest.mark.parametrize("axes", [(0,), (1, 2), (0, 1, 2), ()])
def test_count(rng, axes):
    x = rng.standard_normal((3, 5, 7))
    got = ref("count", x, axes=axes)
    assert got.shape == () and got.dtype == np.float64
    assert got == np.prod([x.shape[a] for a in axes])


@pytest.mark.parametrize("axis, start, stop", [(0, 1, 3), (1, 0, 5), (-1, 2, 6), (2, 6, 7)])
def test_slice(rng, axis, start, stop):
    x = rng.standard_normal((3, 5, 7))
    want = np.take(x, np.arange(start, stop), axis=axis)
    check(ref("slice", x, axis=axis, start=start, stop=stop), want)


@pytest.mark.parametrize("axis, before, after", [(0, 1, 2), (1, 0, 3), (-1, 2, 0), (2, 1, 1)])
def test_pad(rng, axis, before, after):
    x = rng.standard_normal((3, 5, 7))
    widths = [(0, 0)] * 3
    widths[axis] = (before, after)
    check(ref("pad", x, axis=axis, before=before, after=after), np.pad(x, widths))


def test_erf(rng):
    x = rng.standard_normal((3, 5, 7)) * 2
    check(ref("erf", x), ERF(x))


# ---------------------------------------------------------------- losses and metrics' math (kcomp/ir/ops/loss_math.py,
# metric_ops.py); optimizer_update's formulas are checked step by step in tests/test_optimizers.py
LOSS_MATH_OPS = {
    "abs", "sign", "sqrt", "square", "power", "log", "one_hot", "correct", "optimizer_update", "confusion_counts", "confusion_matrix",
    "softmax_cross_entropy", "softmax_cross_entropy_grad",
}


@pytest.mark.parametrize("op, fn", [("abs", np.abs), ("sign", np.sign), ("square", np.square)])
def test_signed_math(rng, op, fn):
    x = rng.normal(size=(3, 5))
    check(ref(op, x), fn(x))


@pytest.mark.parametrize("op, fn", [("sqrt", np.sqrt), ("log", np.log)])
def test_positive_math(rng, op, fn):
    x = rng.uniform(0.1, 3.0, size=(3, 5))
    check(ref(op, x), fn(x))


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, -1.0, 0.0, 1.7])
def test_power(rng, exponent):
    x = rng.uniform(0.1, 3.0, size=(3, 5))
    check(ref("power", x, exponent=exponent), np.power(x, exponent))


def test_one_hot(rng):
    ids = rng.integers(0, 4, size=(3, 5))
    check(ref("one_hot", ids, depth=4, dtype="float64"), np.eye(4)[ids])
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        ref("one_hot", np.array([0, 4]), depth=4)


def test_correct(rng):
    p = rng.normal(size=(6, 4))
    labels = rng.integers(0, 4, size=6)
    check(ref("correct", np.eye(4)[labels], p, kind="categorical"), (p.argmax(1) == labels).astype(np.float32), F32)
    check(ref("correct", labels, p, kind="sparse_categorical"), (p.argmax(1) == labels).astype(np.float32), F32)
    check(ref("correct", labels[:, None], p, kind="sparse_categorical"), (p.argmax(1) == labels).astype(np.float32), F32)
    top2 = np.argsort(-p, axis=1)[:, :2]
    check(ref("correct", labels, p, kind="sparse_top_k", k=2), (top2 == labels[:, None]).any(1).astype(np.float32), F32)
    y = (rng.random((6, 1)) > 0.5).astype(np.float64)
    prob = rng.random((6, 1))
    check(ref("correct", y, prob, kind="binary"), ((prob > 0.5) == y).astype(np.float32), F32)


def test_confusion_counts(rng):
    y = (rng.random((40, 1)) > 0.4) * rng.choice([1.0, 0.3], size=(40, 1))  # soft labels count as positive (Keras's bool cast)
    p = rng.random((40, 1))
    got = ref("confusion_counts", y, p, thresholds=(0.3, 0.7))
    for row, t in zip(got, (0.3, 0.7)):
        pred, act = p > t, y != 0
        want = [(pred & act).sum(), (pred & ~act).sum(), (~pred & ~act).sum(), (~pred & act).sum()]
        check(row, np.array(want, dtype=np.float32), F32)


def test_confusion_matrix(rng):
    t = rng.integers(-1, 5, size=(40, 3))  # -1 and 4 fall outside 4 classes
    scores = rng.normal(size=(40, 3, 4))
    want = np.zeros((4, 4), np.float32)
    for a, b in zip(t.ravel(), scores.argmax(-1).ravel()):
        if 0 <= a < 4 and a != 2:
            want[a, b] += 1
    check(ref("confusion_matrix", t, scores, num_classes=4, sparse_y_pred=False, ignore_class=2), want, F32)
    check(ref("confusion_matrix", np.eye(4)[t.clip(0, 3)], t.clip(0, 3) + 0.7, num_classes=4, sparse_y_true=False),
          np.diag(np.bincount(t.clip(0, 3).ravel(), minlength=4)).astype(np.float32), F32)


def _keras_categorical_crossentropy(y, p):
    """Keras's formula in numpy: rows rescaled to sum 1, clipped to [1e-7, 1 - 1e-7]."""
    q = np.clip(p / p.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    return -(y * np.log(q)).sum(-1)


def test_softmax_cross_entropy(rng):
    logits = rng.normal(size=(6, 5)) * 3
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    p[0, 2] = 1e-12  # clipped, as Keras clips
    labels = rng.integers(0, 5, size=6)
    labels[0] = 2
    check(ref("softmax_cross_entropy", p, np.eye(5)[labels]), _keras_categorical_crossentropy(np.eye(5)[labels], p))
    check(ref("softmax_cross_entropy", p, labels), _keras_categorical_crossentropy(np.eye(5)[labels], p))
    soft = rng.random((6, 5))
    check(ref("softmax_cross_entropy", p, soft), _keras_categorical_crossentropy(soft, p))
    with pytest.raises(ShapeError, match=r"\[0, 5\)"):
        ref("softmax_cross_entropy", p, np.array([0, 1, 2, 3, 4, 5]))


def test_softmax_cross_entropy_grad(rng):
    p = rng.random((6, 5))
    soft = rng.random((6, 5))
    g = rng.normal(size=6)
    check(ref("softmax_cross_entropy_grad", p, soft, g), (p * soft.sum(-1, keepdims=True) - soft) * g[:, None])
    labels = rng.integers(0, 5, size=6)
    check(ref("softmax_cross_entropy_grad", p, labels, g), (p - np.eye(5)[labels]) * g[:, None])


@pytest.mark.parametrize("ids", [[0, 3, 10], [-1, 2, 4]])
@pytest.mark.parametrize("op", ["one_hot", "softmax_cross_entropy", "softmax_cross_entropy_grad"])
def test_class_ids_out_of_range_are_refused_naming_them(op, ids):
    ids = torch.tensor(ids, dtype=torch.int32)
    probs = torch.full((3, 10), 0.1)
    args = {"one_hot": lambda: OPS[op].reference(ids, depth=10, dtype="float32"),
            "softmax_cross_entropy": lambda: OPS[op].reference(probs, ids),
            "softmax_cross_entropy_grad": lambda: OPS[op].reference(probs, ids, torch.ones(3))}[op]
    with pytest.raises(ShapeError, match=rf"class ids must lie in \[0, 10\), received values from {int(ids.min())} to {int(ids.max())}"):
        args()


def test_class_ids_in_range_give_one_hot_rows():
    ids = torch.tensor([[0, 9], [4, 4]], dtype=torch.int32)
    assert torch.equal(OPS["one_hot"].reference(ids, depth=10, dtype="float32"),
                       torch.nn.functional.one_hot(ids.long(), 10).float())
    assert OPS["one_hot"].reference(torch.zeros(0, dtype=torch.int32), depth=3, dtype="float32").shape == (0, 3)


@pytest.mark.parametrize("ids", [[0, 3, 5], [-1, 2, 4]])
def test_embedding_ids_out_of_range_are_refused_naming_them(ids):
    ids = torch.tensor(ids, dtype=torch.int32)
    with pytest.raises(ShapeError, match=rf"ids must lie in \[0, 5\), received values from {int(ids.min())} to "
                                         rf"{int(ids.max())}; raise input_dim"):
        OPS["embedding"].reference(ids, torch.zeros(5, 2))
    ok = torch.tensor([[0, 4], [2, 2]], dtype=torch.int32)
    table = torch.randn(5, 2)
    assert torch.equal(OPS["embedding"].reference(ok, table), table[ok.long()])
