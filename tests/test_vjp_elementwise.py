"""VJP rules of the elementwise, activation, linalg, reduction and shape ops, and of the
ops gradients are built from (kcomp/ir/ops/grad_support.py): each against
torch.autograd in float64 (tests/vjp_harness.py), on fresh random ragged inputs
kept away from kinks; broadcasting, a symbolic batch run at two sizes, second
derivatives, and one backward graph through the fused plan under the interpreter.
"""

import zlib

import numpy as np
import pytest
import torch

from kcomp.errors import ShapeError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.passes.autodiff import gradients
from kcomp.runtime.reference import run_reference
from kernel_helpers import assert_compiled_matches_reference
from vjp_harness import check_vjp

SHAPE = (3, 5, 7)


@pytest.fixture
def rng(request):
    """A fresh generator per test (seeded from the test id, so reruns are reproducible)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def away_from(x, points, gap=0.05):
    """x with every entry at least `gap` from each kink in `points` (entries too close move up by 2 gaps)."""
    x = np.array(x, dtype=np.float64)
    for _ in range(2):
        for p in points:
            close = np.abs(x - p) < gap
            x[close] += 2 * gap
    return x


def nonzero_divisor(rng, shape):
    return rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


# ---------------------------------------------------------------- binary ops with broadcasting

BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
BROADCAST_SHAPES = [
    (SHAPE, SHAPE), (SHAPE, (7,)), ((7,), SHAPE), ((3, 1, 7), (5, 1)), ((3, 5), ()), ((), (5,)), ((1, 5, 1), (3, 1, 7)),
]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("op", BINARY)
def test_binary(rng, op, shapes):
    a = rng.standard_normal(shapes[0])
    b = nonzero_divisor(rng, shapes[1]) if op == "div" else rng.standard_normal(shapes[1])
    check_vjp(op, [a, b], seed=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("shapes", [(SHAPE, SHAPE), (SHAPE[:2] + (1,), SHAPE), ((3, 1, 7), (5, 1))], ids=str)
def test_zeros_where_masked(rng, shapes):
    mask = (rng.uniform(size=shapes[1]) < 0.5).astype(np.float64)  # 0/1, as the layers make masks
    check_vjp("zeros_where_masked", [rng.standard_normal(shapes[0]), mask], seed=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("shapes", [(SHAPE, SHAPE), (SHAPE, (7,)), ((3, 1, 7), (5, 1))], ids=str)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_split_ties_like_torch(rng, op, shapes):
    # Small integers: many exact ties, where torch gives each input half the gradient.
    a = rng.integers(-2, 3, shapes[0]).astype(np.float64)
    b = rng.integers(-2, 3, shapes[1]).astype(np.float64)
    check_vjp(op, [a, b])


@pytest.mark.parametrize("exponent", [2.0, 3.0, 0.5, 1.7, -1.5])
def test_power(rng, exponent):
    check_vjp("power", [rng.uniform(0.3, 3.0, SHAPE)], {"exponent": exponent})


def test_power_gradient_at_zero_is_zero_for_exponents_above_one():
    """Keras's focal losses raise 1 - p to gamma = 2 where 1 - p can be exactly 0."""
    check_vjp("power", [np.array([[0.0, 0.5, 2.0]])], {"exponent": 2.0})


def test_neg_and_rsqrt(rng):
    check_vjp("neg", [rng.standard_normal(SHAPE)])
    check_vjp("rsqrt", [rng.uniform(0.3, 3.0, SHAPE)])


# ---------------------------------------------------------------- constant and cast


def test_constant_has_no_inputs_and_feeds_gradients(rng):
    b = GraphBuilder()
    x = b.input(SHAPE, "float64", "x")
    c = b.emit1("constant", [], value=2.5, dtype="float64")
    assert OPS["constant"].vjp(b, b.nodes[-1], [x]) == []
    loss = b.emit1("sum", [b.emit1("mul", [b.emit1("mul", [x, x]), c])])
    (gx,) = gradients(b, loss, [x])
    xs = torch.as_tensor(rng.standard_normal(SHAPE))
    (got,) = run_reference(b.finish([gx]), [xs], {})
    np.testing.assert_allclose(got.numpy(), 5.0 * xs.numpy(), rtol=1e-12)


def _grad_through(rng, build, dtype="float64", shape=SHAPE):
    """d sum(build(b, x) * c) / dx by kcomp and by torch through the references."""
    b = GraphBuilder()
    x = b.input(shape, dtype, "x")
    out = build(b, x)
    c = b.input(out.shape, out.dtype, "c")
    loss = b.emit1("sum", [b.emit1("mul", [out, c])])
    forward = b.finish([loss])
    (gx,) = gradients(b, loss, [x])
    xs = torch.as_tensor(rng.standard_normal(shape) * 3).to(getattr(torch, dtype))
    cs = torch.as_tensor(rng.standard_normal(out.shape)).to(getattr(torch, out.dtype))
    leaf = xs.clone().requires_grad_(True)
    (value,) = run_reference(forward, [leaf, cs], {})
    want = torch.autograd.grad(value, [leaf])[0] if value.requires_grad else torch.zeros_like(xs)
    got = None if gx is None else run_reference(b.finish([gx]), [xs, cs], {})[0]
    return got, want


def test_cast_between_floats_casts_the_gradient_back(rng):
    def build(b, x):
        narrow = b.emit1("cast", [x], dtype="float32")
        return b.emit1("cast", [b.emit1("tanh", [narrow])], dtype="float64")

    got, want = _grad_through(rng, build)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_cast_to_integers_has_no_gradient(rng):
    def build(b, x):  # trunc(x) * x: only the second factor carries a gradient
        whole = b.emit1("cast", [b.emit1("cast", [x], dtype="int32")], dtype="float64")
        return b.emit1("mul", [whole, x])

    got, want = _grad_through(rng, build)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
    only_int = _grad_through(rng, lambda b, x: b.emit1("cast", [b.emit1("cast", [x], dtype="int64")], dtype="float64"))
    assert only_int[0] is None and torch.count_nonzero(only_int[1]) == 0


# ---------------------------------------------------------------- activations

# (op, attrs, kinks to keep away from)
ACTIVATIONS = [
    ("relu", {}, [0.0]),
    ("relu", {"negative_slope": 0.1}, [0.0]),
    ("relu", {"max_value": 6.0}, [0.0, 6.0]),
    ("relu", {"max_value": 1.5}, [0.0, 1.5]),
    ("relu", {"threshold": 0.5}, [0.5]),
    ("relu", {"threshold": -0.5}, [-0.5]),
    ("relu", {"negative_slope": 0.3, "max_value": 2.0, "threshold": 0.5}, [0.5, 2.0]),
    ("relu", {"negative_slope": 0.5, "threshold": 1.0}, [1.0]),
    ("relu", {"negative_slope": 0.2, "max_value": 3.0, "threshold": -1.0}, [-1.0, 0.0, 3.0]),
    ("sigmoid", {}, []),
    ("tanh", {}, []),
    *[("softmax", {"axis": a}, []) for a in (-1, 0, 1, 2)],
    *[("log_softmax", {"axis": a}, []) for a in (-1, 0, 1)],
    ("gelu", {}, []),
    ("gelu", {"approximate": True}, []),
    ("elu", {}, [0.0]),
    ("elu", {"alpha": 0.5}, [0.0]),
    ("selu", {}, [0.0]),
    ("softplus", {}, []),
    ("softsign", {}, [0.0]),
    ("leaky_relu", {}, [0.0]),
    ("leaky_relu", {"negative_slope": 0.05}, [0.0]),
    ("silu", {}, []),
    ("hard_sigmoid", {}, [-3.0, 3.0]),
    ("hard_silu", {}, [-3.0, 3.0]),
    ("mish", {}, []),
    ("exponential", {}, []),
    ("linear", {}, []),
]


def test_every_activation_is_covered():
    assert {case[0] for case in ACTIVATIONS} == {n for n, op in OPS.items() if "activation" in op.traits}


@pytest.mark.parametrize("op, attrs, kinks", ACTIVATIONS, ids=[f"{c[0]}-{c[1]}" for c in ACTIVATIONS])
def test_activation(rng, op, attrs, kinks):
    x = away_from(rng.standard_normal(SHAPE) * 3, kinks)  # * 3 reaches the caps of relu6 and hard_sigmoid
    check_vjp(op, [x], attrs, seed=int(rng.integers(1 << 30)))


KINKED = [case for case in ACTIVATIONS if case[2]]


@pytest.mark.parametrize("op, attrs, kinks", KINKED, ids=[f"{c[0]}-{c[1]}" for c in KINKED])
def test_activation_at_its_kinks_picks_torchs_one_sided_slope(rng, op, attrs, kinks):
    x = rng.standard_normal(SHAPE) * 3
    x.flat[: 4 * len(kinks)] = np.repeat(kinks, 4)  # exactly on every kink, a few times each
    check_vjp(op, [x], attrs)


def test_softplus_far_above_torchs_threshold(rng):
    # torch's softplus is exactly x above 20; the sigmoid rule agrees there to rounding.
    check_vjp("softplus", [rng.uniform(15.0, 30.0, (4, 6))])


# ---------------------------------------------------------------- matmul and bias_add

MATMULS = [
    ((5, 7), (7, 4)), ((3, 5, 7), (7, 4)), ((2, 3, 4, 5), (5, 6)),  # Dense: a rank-2 kernel
    ((2, 3, 4, 5), (2, 3, 5, 6)), ((2, 1, 4, 5), (3, 5, 6)), ((4, 5), (3, 5, 6)), ((3, 4, 5), (5, 2)),
    ((2, 4, 5), (1, 5, 6)),
]


@pytest.mark.parametrize("sa, sb", MATMULS, ids=str)
def test_matmul(rng, sa, sb):
    check_vjp("matmul", [rng.standard_normal(sa), rng.standard_normal(sb)])


@pytest.mark.parametrize("shape", [SHAPE, (4, 6), (6,)], ids=str)
def test_bias_add(rng, shape):
    check_vjp("bias_add", [rng.standard_normal(shape), rng.standard_normal(shape[-1])])


# ---------------------------------------------------------------- reductions

AXES = [None, (), (1,), (0, 2), (-1, 0), (0, 1, 2), (2,)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduction(rng, op, axes, keepdims):
    check_vjp(op, [rng.standard_normal(SHAPE)], {"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize("axes", [None, (1,), (0, 2)], ids=str)
def test_max_splits_ties_evenly_like_amax(rng, axes):
    x = rng.integers(0, 3, SHAPE).astype(np.float64)  # many maxima tie
    check_vjp("max", [x], {"axes": axes, "keepdims": False})


# ---------------------------------------------------------------- shape ops


@pytest.mark.parametrize("target", [(3, 35), (15, 7), (105,), (3, 7, 5), (1, 3, 5, 7)], ids=str)
def test_reshape(rng, target):
    check_vjp("reshape", [rng.standard_normal(SHAPE)], {"shape": target})


@pytest.mark.parametrize("perm", [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
def test_transpose(rng, perm):
    check_vjp("transpose", [rng.standard_normal(SHAPE)], {"perm": perm})


@pytest.mark.parametrize(
    "shapes, axis",
    [([(3, 5, 2), (3, 5, 3)], -1), ([(3, 2, 7), (3, 4, 7), (3, 1, 7)], 1), ([(2, 5), (4, 5)], 0), ([(3, 5)], -1),
     ([(3, 5, 2), (3, 5, 3)], 2)],
    ids=str,
)
def test_concat(rng, shapes, axis):
    check_vjp("concat", [rng.standard_normal(s) for s in shapes], {"axis": axis})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_flip(rng, axis):
    check_vjp("flip", [rng.standard_normal((3, 4, 5))], {"axis": axis})


# ---------------------------------------------------------------- the ops gradients are built from


def test_slice_pad_erf_broadcast_like(rng):
    x = rng.standard_normal(SHAPE)
    check_vjp("slice", [x], {"axis": 1, "start": 1, "stop": 4})
    check_vjp("slice", [x], {"axis": -1, "start": 0, "stop": 7})
    check_vjp("pad", [x], {"axis": 2, "before": 2, "after": 3})
    check_vjp("pad", [x], {"axis": 0, "before": 0, "after": 1})
    check_vjp("erf", [x])
    for small in [(5, 1), (1, 1, 7), (), SHAPE]:
        assert check_vjp("broadcast_like", [rng.standard_normal(small), x]) == [1]  # `like` gets no gradient


@pytest.mark.parametrize("op", ["greater", "equal", "count"])
def test_masks_and_counts_have_no_gradient(rng, op):
    b = GraphBuilder()
    x = b.input(SHAPE, "float64", "x")
    y = b.emit1("count", [x], axes=(0, 2)) if op == "count" else b.emit1(op, [x, b.input((7,), "float64", "y")])
    loss = b.emit1("sum", [b.emit1("mul", [y, x])])
    node = next(n for n in b.nodes if n.op == op)
    assert OPS[op].vjp(b, node, [y]) == [None] * len(node.inputs)
    (gx,) = gradients(b, loss, [x])
    xs = torch.as_tensor(rng.standard_normal(SHAPE))
    ys = torch.as_tensor(rng.standard_normal(7))
    inputs = [xs] if op == "count" else [xs, ys]
    (got,) = run_reference(b.finish([gx]), inputs, {})
    (want,) = run_reference(b.finish([y]), inputs, {})
    np.testing.assert_allclose(got.numpy(), np.broadcast_to(want.numpy(), SHAPE))  # only the direct factor x


def test_new_ops_shape_rules():
    b = GraphBuilder()
    x = b.input((None, 5, 7), "float32", "x")
    assert b.emit1("greater", [x, b.input((7,), "float32", "t")]).spec == x.spec
    assert b.emit1("equal", [x, x]).dtype == "float32"
    assert b.emit1("broadcast_like", [b.input((None, 1, 7), "float32", "g"), x]).shape == ("N", 5, 7)
    assert b.emit1("broadcast_like", [b.input((), "float64", "s"), x]).spec.dtype == "float64"
    count = b.emit1("count", [x], axes=(0, 1))
    assert count.shape == () and count.dtype == "float32"
    assert b.emit1("slice", [x], axis=-1, start=2, stop=5).shape == ("N", 5, 3)
    assert b.emit1("pad", [x], axis=1, before=1, after=2).shape == ("N", 8, 7)
    assert b.emit1("erf", [x]).spec == x.spec
    bad = [
        ("broadcast_like", [b.input((5, 7), "float32", "a"), b.input((1, 7), "float32", "b")], {}),
        ("broadcast_like", [b.input((2, 5, 7), "float32", "c"), x], {}),
        ("slice", [x], {"axis": 1, "start": 3, "stop": 3}),
        ("slice", [x], {"axis": 1, "start": 0, "stop": 6}),
        ("slice", [x], {"axis": 0, "start": 0, "stop": 1}),  # the batch has no static size
        ("pad", [x], {"axis": 1, "before": -1, "after": 0}),
        ("pad", [x], {"axis": 3, "before": 1, "after": 0}),
        ("count", [x], {"axes": (3,)}),
        ("erf", [b.input((3,), "int32", "i")], {}),
    ]
    for op, inputs, attrs in bad:
        with pytest.raises(ShapeError):
            b.emit1(op, inputs, **attrs)


# ---------------------------------------------------------------- a symbolic batch, run at two sizes


def _small_model(b, dtype):
    """A graph touching the batch-dependent rules: Dense on rank 3, bias, gelu, max, reshape,
    concat, transpose, softmax, log_softmax, mean over the batch (count) and over everything."""
    x = b.input((None, 5, 7), dtype, "x")
    target = b.input((None, 24), dtype, "target")
    kernel, bias = b.param("k", (7, 4), dtype, "kernel"), b.param("b", (4,), dtype, "bias")
    scale = b.param("s", (24,), dtype, "scale")
    h = b.emit1("gelu", [b.emit1("bias_add", [b.emit1("matmul", [x, kernel]), bias])])
    peak = b.emit1("max", [h], axes=(1,))
    flat = b.emit1("reshape", [b.emit1("transpose", [h], perm=(0, 2, 1))], shape=("N", 20))
    joined = b.emit1("mul", [b.emit1("concat", [flat, peak], axis=1), scale])
    probs = b.emit1("softmax", [joined])
    per_item = b.emit1("sum", [b.emit1("mul", [b.emit1("log_softmax", [joined]), target])], axes=(1,))
    batch_mean = b.emit1("mean", [b.emit1("relu", [joined], negative_slope=0.1)], axes=(0,))  # (24,), / N
    weighted = b.emit1("sum", [b.emit1("mul", [batch_mean, b.emit1("max", [probs], axes=(0,))])])
    loss = b.emit1("add", [b.emit1("mean", [per_item]), weighted])
    return loss, [x, target], [kernel, bias, scale]


def _weights(rng, params, dtype):
    return {p.name: torch.as_tensor(rng.standard_normal(p.shape) * 0.7).to(getattr(torch, dtype)) for p in params}


def test_symbolic_batch_graph_runs_at_two_batch_sizes(rng):
    b = GraphBuilder("step")
    loss, inputs, params = _small_model(b, "float64")
    forward = b.finish([loss])
    grads = gradients(b, loss, params + inputs[:1])
    ops = {n.op for n in b.nodes}
    assert {"count", "broadcast_like", "slice", "equal", "greater"} <= ops
    graph = b.finish(grads)
    weights = _weights(rng, params, "float64")
    for n in (2, 5):
        data = [torch.as_tensor(rng.standard_normal((n, 5, 7))), torch.as_tensor(rng.standard_normal((n, 24)))]
        got = run_reference(graph, data, weights)
        leaves = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
        x = data[0].clone().requires_grad_(True)
        (value,) = run_reference(forward, [x, data[1]], leaves)
        want = torch.autograd.grad(value, [leaves[p.name] for p in params] + [x])
        for g, w, name in zip(got, want, [p.name for p in params] + ["x"]):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-7, atol=1e-10, err_msg=f"batch {n}: d/d {name}")


def test_dense_kernel_gradient_with_two_unknown_lengths(rng):
    b = GraphBuilder()
    x = b.input((None, None, 5), "float64", "x")  # batch and a variable sequence length
    kernel = b.param("k", (5, 3), "float64", "kernel")
    loss = b.emit1("sum", [b.emit1("tanh", [b.emit1("matmul", [x, kernel])])])
    forward = b.finish([loss])
    (gk,) = gradients(b, loss, [kernel])
    xs, ks = torch.as_tensor(rng.standard_normal((2, 4, 5))), torch.as_tensor(rng.standard_normal((5, 3)))
    (got,) = run_reference(b.finish([gk]), [xs], {"kernel": ks})
    leaf = ks.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(run_reference(forward, [xs], {"kernel": leaf})[0], [leaf])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


# ---------------------------------------------------------------- second derivatives


def _second_derivative(rng, build, shape=SHAPE):
    """d/dx sum(c2 * d/dx sum(c * f(x))) by kcomp's rules applied twice, and by torch double backward."""
    b = GraphBuilder()
    x = b.input(shape, "float64", "x")
    out = build(b, x)
    c = b.input(out.shape, "float64", "c")
    c2 = b.input(shape, "float64", "c2")
    loss = b.emit1("sum", [b.emit1("mul", [out, c])])
    forward = b.finish([loss])
    (gx,) = gradients(b, loss, [x])
    (ggx,) = gradients(b, b.emit1("sum", [b.emit1("mul", [gx, c2])]), [x])
    data = [torch.as_tensor(rng.standard_normal(s)) for s in (shape, out.shape, shape)]
    (got,) = run_reference(b.finish([ggx]), data, {})
    leaf = data[0].clone().requires_grad_(True)
    (first,) = torch.autograd.grad(run_reference(forward, [leaf, *data[1:]], {})[0], [leaf], create_graph=True)
    (want,) = torch.autograd.grad((first * data[2]).sum(), [leaf])
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-10)


SECOND = {
    "gelu-erf": lambda b, x: b.emit1("gelu", [x]),
    "gelu-tanh": lambda b, x: b.emit1("gelu", [x], approximate=True),
    "concat-slice-pad": lambda b, x: b.emit1("concat", [b.emit1("tanh", [x]), b.emit1("mul", [x, x])], axis=1),
    "mean-broadcast_like": lambda b, x: b.emit1(
        "exponential", [b.emit1("mean", [b.emit1("sigmoid", [x])], axes=(0, 2), keepdims=True)]
    ),
    "softmax": lambda b, x: b.emit1("softmax", [x], axis=1),
    "log_softmax": lambda b, x: b.emit1("log_softmax", [x]),
    "max": lambda b, x: b.emit1("max", [b.emit1("mul", [x, x])], axes=(1,)),
    "div-rsqrt": lambda b, x: b.emit1(
        "div", [x, b.emit1("rsqrt", [b.emit1("add", [b.emit1("mul", [x, x]), b.emit1("exponential", [x])])])]
    ),
    "silu-mish-softplus": lambda b, x: b.emit1(
        "add", [b.emit1("silu", [x]), b.emit1("mish", [b.emit1("softplus", [x])])]
    ),
    "matmul": lambda b, x: b.emit1("matmul", [b.emit1("sigmoid", [x]), b.emit1("transpose", [x], perm=(0, 2, 1))]),
}


@pytest.mark.parametrize("name", sorted(SECOND))
def test_second_derivative(rng, name):
    _second_derivative(rng, SECOND[name])


# ---------------------------------------------------------------- the backward graph through the fused plan


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # masked-off lanes under the interpreter
def test_backward_graph_runs_fused_under_the_interpreter(rng):
    """The gradient graph fuses (the masks, broadcast_like and erf have Triton expressions) and the
    fused plan agrees with the reference executor."""
    b = GraphBuilder("step")
    loss, inputs, params = _small_model(b, "float32")
    graph = b.finish(gradients(b, loss, params + inputs[:1]))
    weights = _weights(rng, params, "float32")
    data = [torch.as_tensor(rng.standard_normal((3, 5, 7)), dtype=torch.float32),
            torch.as_tensor(rng.standard_normal((3, 24)), dtype=torch.float32)]
    fused = assert_compiled_matches_reference(graph, data, weights, kind="long").fused  # a whole backward pass
    absorbed = {n.op for k in fused.nodes if k.op == "kernel" for n in k.attrs["body"].nodes}
    assert {"greater", "equal", "erf", "broadcast_like"} <= absorbed


def test_transposed_value_outlives_its_input_buffer_in_the_plan(rng):
    """Backward graphs transpose kernel outputs, and transpose's reference returns a view: the plan
    must keep the viewed buffer alive (it used to hand it to the next kernel of the same size)."""
    from kcomp.runtime.executor import PlanExecutor

    b = GraphBuilder("probe")
    x, x2 = b.input((None, 6, 6), "float32", "x"), b.input((None, 6, 6), "float32", "x2")
    turned = b.emit1("transpose", [b.emit1("relu", [x])], perm=(0, 2, 1))  # relu's buffer is free after this
    other = b.emit1("sigmoid", [x2])  # a kernel of the same size: it takes that buffer
    graph = b.finish([b.emit1("add", [turned, other]), other])
    data = [torch.as_tensor(rng.standard_normal((2, 6, 6)), dtype=torch.float32) for _ in range(2)]
    got = PlanExecutor(graph, "triton-interpret").run(data, {})
    np.testing.assert_allclose(got[0].numpy(), run_reference(graph, data, {})[0].numpy(), rtol=1e-6, atol=1e-6)
