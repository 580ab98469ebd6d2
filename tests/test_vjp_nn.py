"""VJP rules of the layer ops (conv2d, pooling, normalization, dropout, embedding,
recurrent) against torch.autograd in float64, through tests/vjp_harness.check_vjp.

Fresh random inputs at ragged sizes (9x11 images, odd channels). Two more checks
the harness does not make: gradients built on the symbolic batch "N" (sizes known
only at run time), and ops where only some outputs reach the loss.
The backward ops themselves (conv_grad.py) are checked against independent numpy
and torch computations in test_op_reference.py.
"""


import numpy as np
import pytest
import torch

from kcomp.errors import ShapeError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.ir.types import BATCH, DTYPE_OF_TORCH
from kcomp.passes.autodiff import gradients
from kcomp.runtime.reference import run_reference
from vjp_harness import F64, check_vjp

@pytest.fixture
def rng(request):
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ---------------------------------------------------------------- symbolic batch, partial use


def check_symbolic(op, inputs, attrs, used=None, seed=1):
    """As check_vjp, with input 0's first axis the symbolic batch "N" and only the outputs
    in `used` (default: every float output) in the loss; compares with torch.autograd."""
    rng = np.random.default_rng(seed)
    tensors = [torch.as_tensor(np.asarray(a)) for a in inputs]
    wrt = [i for i, t in enumerate(tensors) if t.is_floating_point()]
    leaves = [t.clone().requires_grad_(i in wrt) for i, t in enumerate(tensors)]
    out = OPS[op].reference(*leaves, **OPS[op].resolve_attrs(attrs))
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    used = [j for j, o in enumerate(outs) if o.is_floating_point()] if used is None else list(used)
    cotangents = {j: torch.as_tensor(rng.normal(size=tuple(outs[j].shape))) for j in used}
    loss = sum((outs[j] * c).sum() for j, c in cotangents.items())
    want = torch.autograd.grad(loss, [leaves[i] for i in wrt], allow_unused=True)

    b = GraphBuilder("vjp_symbolic")
    values = [
        b.input((None, *t.shape[1:]) if i == 0 else tuple(t.shape), DTYPE_OF_TORCH[t.dtype], f"x{i}")
        for i, t in enumerate(tensors)
    ]
    results = b.emit(op, values, **attrs)
    cot_values = {j: b.input(results[j].shape, "float64", f"c{j}") for j in used}
    terms = [b.emit1("sum", [b.emit1("mul", [results[j], c])]) for j, c in cot_values.items()]
    total = terms[0]
    for t in terms[1:]:
        total = b.emit1("add", [total, t])
    grads = gradients(b, total, [values[i] for i in wrt])
    assert values[0].shape[0] == BATCH
    present = [g for g in grads if g is not None]
    got = iter(run_reference(b.finish(present), [*tensors, *cotangents.values()], {}))
    for i, g, w in zip(wrt, grads, want):
        if g is None:
            assert w is None or torch.count_nonzero(w) == 0, f"{op}: no gradient for input {i}, torch has one"
            continue
        if values[i].shape and values[i].shape[0] == BATCH:
            assert g.shape[0] == BATCH  # the gradient keeps the symbol: one graph serves every batch size
        w = torch.zeros_like(tensors[i]) if w is None else w
        np.testing.assert_allclose(next(got).numpy(), w.numpy(), err_msg=f"{op}: d/d input {i}", **F64)


# ---------------------------------------------------------------- conv2d

CONV_CASES = [
    # (input channels, kernel (kh, kw, in/groups, filters), attrs)
    (3, (3, 3, 3, 5), {}),
    (3, (3, 3, 3, 5), {"strides": (2, 2)}),
    (3, (3, 3, 3, 5), {"strides": (2, 2), "padding": "same"}),
    (3, (2, 4, 3, 5), {"strides": (2, 1), "padding": "same"}),  # even kernel: the extra pad goes after
    (3, (2, 2, 3, 5), {"strides": (2, 2)}),  # 9 rows: the last one is in no window
    (3, (4, 3, 3, 5), {"strides": (3, 2), "padding": "same"}),
    (3, (3, 3, 3, 5), {"dilation": (2, 2)}),
    (3, (3, 3, 3, 5), {"dilation": (2, 2), "padding": "same"}),
    (3, (3, 2, 3, 5), {"dilation": (2, 1), "strides": (1, 2), "padding": "same"}),
    (4, (3, 3, 2, 6), {"groups": 2}),
    (4, (3, 3, 2, 6), {"groups": 2, "strides": (2, 2), "padding": "same"}),
    (6, (1, 1, 6, 5), {}),
    (6, (3, 1, 2, 9), {"groups": 3, "dilation": (2, 1), "padding": "same"}),
]


@pytest.mark.parametrize("cin, kernel, attrs", CONV_CASES, ids=[f"{k}-{a}" for _, k, a in CONV_CASES])
def test_conv2d(rng, cin, kernel, attrs):
    check_vjp("conv2d", [normal(rng, 2, 9, 11, cin), normal(rng, *kernel, scale=0.5)], attrs)


def test_conv2d_symbolic_batch(rng):
    attrs = {"groups": 2, "strides": (2, 2), "padding": "same"}
    check_symbolic("conv2d", [normal(rng, 3, 9, 11, 4), normal(rng, 3, 3, 2, 6)], attrs)


# ---------------------------------------------------------------- pooling

POOL_CASES = [
    {"pool_size": (3, 3), "strides": (2, 2)},
    {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"},
    {"pool_size": (2, 2), "strides": (2, 2)},
    {"pool_size": (2, 2), "strides": (2, 2), "padding": "same"},
    {"pool_size": (3, 2), "strides": (1, 1), "padding": "same"},
    {"pool_size": (2, 3), "strides": (3, 1)},
]


@pytest.mark.parametrize("attrs", POOL_CASES, ids=str)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool(rng, op, attrs):
    check_vjp(op, [normal(rng, 2, 9, 11, 3)], attrs)  # random floats: no ties in max pooling


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_symbolic_batch(rng, op):
    check_symbolic(op, [normal(rng, 3, 9, 11, 3)], {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"})


# ---------------------------------------------------------------- batch normalization

BN_LAYOUTS = [((4, 5, 7), -1), ((4, 5, 7), 1), ((3, 5, 4, 3), 1), ((3, 4, 3, 5), -1)]
CENTER_SCALE = [(True, True), (False, True), (True, False), (False, False)]


def bn_inputs(rng, shape, axis, center, scale):
    c = shape[axis]
    x = normal(rng, *shape, scale=2.0) + 0.5
    params = [normal(rng, c), rng.uniform(0.5, 2.0, c)]  # moving mean, moving variance
    params += ([rng.uniform(0.5, 2.0, c)] if scale else []) + ([normal(rng, c)] if center else [])
    return [x, *params]


@pytest.mark.parametrize("center, scale", CENTER_SCALE)
@pytest.mark.parametrize("shape, axis", BN_LAYOUTS)
@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_train"])
def test_batch_norm(rng, op, shape, axis, center, scale):
    attrs = {"axis": axis, "center": center, "scale": scale}
    missing = check_vjp(op, bn_inputs(rng, shape, axis, center, scale), attrs)
    if op == "batch_norm_train":
        assert missing == [1, 2]  # the moving statistics are only passed through
    else:
        assert missing == []


@pytest.mark.parametrize("used", [(0,), (1,), (2,), (1, 2), (0, 2)])
def test_batch_norm_train_some_outputs_used(rng, used):
    check_symbolic("batch_norm_train", bn_inputs(rng, (3, 5, 4, 3), 1, True, True), {"axis": 1}, used=used)


@pytest.mark.parametrize("op", ["batch_norm", "batch_norm_train"])
def test_batch_norm_symbolic_batch(rng, op):
    check_symbolic(op, bn_inputs(rng, (3, 5, 7), -1, True, True), {"epsilon": 1e-5})


# ---------------------------------------------------------------- layer normalization


@pytest.mark.parametrize("center, scale", CENTER_SCALE)
@pytest.mark.parametrize("axes", [(-1,), (1, 2), (1,), (2, 1)])
def test_layer_norm(rng, axes, center, scale):
    x = normal(rng, 3, 5, 7, scale=3.0) + 1.0
    param_shape = tuple(x.shape[a % 3] for a in sorted(a % 3 for a in axes))
    params = ([rng.uniform(0.5, 2.0, param_shape)] if scale else []) + ([normal(rng, *param_shape)] if center else [])
    check_vjp("layer_norm", [x, *params], {"axes": axes, "center": center, "scale": scale})


def test_layer_norm_rank4_symbolic_batch(rng):
    x = normal(rng, 3, 4, 5, 3)
    check_symbolic("layer_norm", [x, rng.uniform(0.5, 2.0, (5, 3)), normal(rng, 5, 3)], {"axes": (2, 3)})


# ---------------------------------------------------------------- dropout


@pytest.mark.parametrize("training, rate", [(True, 0.3), (True, 0.75), (False, 0.5), (True, 0.0)])
def test_dropout(rng, training, rate):
    check_vjp("dropout", [normal(rng, 4, 5, 7)], {"rate": rate, "training": training, "seed": 5})


def test_dropout_gradient_reuses_the_mask(rng):
    """The backward node is a dropout with the forward's seed and rate: the same mask."""
    b = GraphBuilder()
    x = b.input((None, 5, 7), "float64", "x")
    y = b.emit1("dropout", [x], rate=0.4, seed=9, training=True)
    (dx,) = gradients(b, b.emit1("sum", [y]), [x])
    backward = [n for n in b.nodes if n.op == "dropout"][1]
    assert backward.attrs == {"rate": 0.4, "seed": 9, "training": True}
    xs = torch.as_tensor(normal(rng, 3, 5, 7))
    y_t, dx_t = run_reference(b.finish([y, dx]), [xs], {})
    np.testing.assert_array_equal(y_t != 0, dx_t != 0)
    check_symbolic("dropout", [xs.numpy()], {"rate": 0.4, "seed": 9, "training": True})


# ---------------------------------------------------------------- embedding


@pytest.mark.parametrize("ids_shape, dtype", [((3, 6), "int64"), ((7,), "int32"), ((2, 3, 4), "int64")])
def test_embedding(rng, ids_shape, dtype):
    ids = rng.integers(0, 4, ids_shape).astype(dtype)  # ids 0..3 of a 10-row table: many repeats, unused rows
    ids.flat[0] = ids.flat[-1] = 3
    assert check_vjp("embedding", [ids, normal(rng, 10, 5)]) == []


def test_embedding_symbolic_batch(rng):
    check_symbolic("embedding", [rng.integers(0, 4, (3, 6)), normal(rng, 10, 5)], {})


# ---------------------------------------------------------------- recurrent layers

UNITS, FEATURES = 3, 4
BIAS_SHAPES = {
    "lstm": lambda attrs: (4 * UNITS,),
    "gru": lambda attrs: (2, 3 * UNITS) if attrs.get("reset_after", True) else (3 * UNITS,),
    "simple_rnn": lambda attrs: (UNITS,),
}
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
CELLS = [("lstm", {}), ("gru", {"reset_after": True}), ("gru", {"reset_after": False}), ("simple_rnn", {})]
FLAGS = [(rs, gb, ub) for rs in (False, True) for gb in (False, True) for ub in (True, False)]


def recurrent_inputs(rng, op, attrs, use_bias, batch=2, steps=5):
    g = GATES[op]
    inputs = [normal(rng, batch, steps, FEATURES), normal(rng, FEATURES, g * UNITS, scale=0.5),
              normal(rng, UNITS, g * UNITS, scale=0.5)]
    return inputs + ([normal(rng, *BIAS_SHAPES[op](attrs), scale=0.5)] if use_bias else [])


@pytest.mark.parametrize("return_sequences, go_backwards, use_bias", FLAGS,
                         ids=[f"seq{int(r)}-back{int(g)}-bias{int(u)}" for r, g, u in FLAGS])
@pytest.mark.parametrize("op, extra", CELLS, ids=[f"{op}-{extra}" for op, extra in CELLS])
def test_recurrent(rng, op, extra, return_sequences, go_backwards, use_bias):
    """Gradients flow into every output: the sequence (or last h) and the final states (h, and c)."""
    attrs = {**extra, "return_sequences": return_sequences, "go_backwards": go_backwards, "use_bias": use_bias}
    assert check_vjp(op, recurrent_inputs(rng, op, extra, use_bias), attrs) == []


RECURRENT_PARTIAL = [
    ("lstm", {"return_sequences": True}, (0,)),
    ("lstm", {}, (2,)),
    ("lstm", {"go_backwards": True}, (1, 2)),
    ("lstm", {"activation": "relu", "recurrent_activation": "hard_sigmoid"}, (0, 2)),
    ("gru", {"return_sequences": True, "go_backwards": True}, (1,)),
    ("gru", {"reset_after": False}, (0,)),
    ("simple_rnn", {"return_sequences": True}, (1,)),
    ("simple_rnn", {"activation": "relu", "go_backwards": True}, (0,)),
]


@pytest.mark.parametrize("op, attrs, used", RECURRENT_PARTIAL, ids=[f"{o}-{a}-{u}" for o, a, u in RECURRENT_PARTIAL])
def test_recurrent_some_outputs_used_symbolic_batch(rng, op, attrs, used):
    check_symbolic(op, recurrent_inputs(rng, op, attrs, True, batch=3), attrs, used=used)


def test_recurrent_backward_is_one_node_with_the_used_gradients():
    b = GraphBuilder()
    x = b.input((None, 5, 4), "float32", "x")
    w = [b.param(k, s, "float32", k) for k, s in (("k", (4, 12)), ("r", (3, 12)), ("b", (12,)))]
    seq, h, c = b.emit("lstm", [x, *w], return_sequences=True)
    grads = gradients(b, b.emit1("sum", [c]), w)
    (node,) = [n for n in b.nodes if n.op == "lstm_grad"]
    assert node.attrs["grad_outputs"] == (2,) and len(node.inputs) == 5  # x, 3 weights, d c
    assert [g.shape for g in grads] == [(4, 12), (3, 12), (12,)]


# ---------------------------------------------------------------- backward ops: shape rules refuse misfits

BAD_GRAD_SHAPES = [
    ("conv2d_backprop_input", [(None, 7, 8, 6), (3, 3, 4, 6)], {"input_size": (9, 11)}),  # 7x9 expected
    ("conv2d_backprop_input", [(None, 7, 9, 5), (3, 3, 4, 6)], {"input_size": (9, 11)}),  # filters
    ("conv2d_backprop_filter", [(None, 9, 11, 4), (None, 5, 6, 6)], {"kernel_size": (3, 3)}),  # strides 1: 7x9
    ("conv2d_backprop_filter", [(None, 9, 11, 3), (None, 7, 9, 6)], {"kernel_size": (3, 3), "groups": 2}),
    ("max_pool2d_grad", [(None, 9, 11, 3), (None, 4, 4, 3)], {"pool_size": (3, 3), "strides": (2, 2)}),
    ("max_pool2d_grad", [(None, 9, 11, 3), (None, 4, 5, 2)], {"pool_size": (3, 3), "strides": (2, 2)}),
    ("avg_pool2d_grad", [(None, 5, 6, 3)], {"input_size": (9, 11), "pool_size": (3, 3), "strides": (2, 2)}),
    ("embedding_grad", [(None, 6, "int64"), (None, 5, 4)], {"input_dim": 10}),
    ("embedding_grad", [(None, 6, "int64"), (None, 6, 4)], {"input_dim": 0}),
    ("lstm_grad", [(None, 6, 3), (3, 16), (4, 16), (16,), (None, 6, 4)], {"grad_outputs": (0,)}),  # not a sequence
    ("lstm_grad", [(None, 6, 3), (3, 16), (4, 16), (16,), (None, 4)], {"grad_outputs": (3,)}),
    ("lstm_grad", [(None, 6, 3), (3, 16), (4, 16), (16,), (None, 4)], {"grad_outputs": (0, 1)}),  # arity
    ("gru_grad", [(None, 6, 3), (3, 12), (4, 12), (12,), (None, 4)], {"grad_outputs": (1,)}),  # reset_after bias
]
BAD_IDS = [f"{case[0]}-{i}" for i, case in enumerate(BAD_GRAD_SHAPES)]


@pytest.mark.parametrize("op, shapes, attrs", BAD_GRAD_SHAPES, ids=BAD_IDS)
def test_backward_op_shape_rules_refuse_misfits(op, shapes, attrs):
    b = GraphBuilder()
    values = []
    for shape in shapes:
        dtype = shape[-1] if isinstance(shape[-1], str) else "float32"
        dims = shape[:-1] if isinstance(shape[-1], str) else shape
        values.append(b.input(dims, dtype, "v"))
    with pytest.raises(ShapeError):
        b.emit(op, values, **attrs)


# ---------------------------------------------------------------- softmax_cross_entropy (ops/loss_ops.py)
def test_softmax_cross_entropy_of_other_probabilities(rng):
    """Probabilities no softmax made: the gradient of Keras's formula itself (rescale, clip)."""
    p = rng.uniform(0.05, 1.0, size=(4, 5))
    check_vjp("softmax_cross_entropy", [p, rng.random((4, 5))], wrt=[0])
    check_vjp("softmax_cross_entropy", [p, rng.integers(0, 5, size=4)], wrt=[0])


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("probs_read_elsewhere", [False, True])
def test_softmax_cross_entropy_goes_straight_to_the_logits(rng, sparse, probs_read_elsewhere):
    """softmax -> softmax_cross_entropy: one backward node (p * sum(y) - y) * g gives d/d logits,
    equal to torch.autograd through softmax and Keras's formula; another reader of the
    probabilities still adds its gradient through the softmax."""
    logits = torch.as_tensor(rng.normal(size=(4, 5)) * 2)
    labels = torch.as_tensor(rng.integers(0, 5, size=4) if sparse else rng.random((4, 5)))
    weights = torch.as_tensor(rng.normal(size=4))
    extra = torch.as_tensor(rng.normal(size=(4, 5)))

    leaf = logits.clone().requires_grad_(True)
    probs = torch.softmax(leaf, -1)
    loss = (OPS["softmax_cross_entropy"].reference(probs, labels) * weights).sum()
    if probs_read_elsewhere:
        loss = loss + (probs * extra).sum()
    (want,) = torch.autograd.grad(loss, [leaf])

    b = GraphBuilder("xent")
    x = b.input((4, 5), "float64", "logits")
    y = b.input(tuple(labels.shape), "int64" if sparse else "float64", "labels")
    w = b.input((4,), "float64", "weights")
    e = b.input((4, 5), "float64", "extra")
    p = b.emit1("softmax", [x], axis=-1)
    total = b.emit1("sum", [b.emit1("mul", [b.emit1("softmax_cross_entropy", [p, y]), w])])
    if probs_read_elsewhere:
        total = b.emit1("add", [total, b.emit1("sum", [b.emit1("mul", [p, e])])])
    (grad,) = gradients(b, total, [x])
    ops_used = [n.op for n in b.nodes]
    assert "softmax_cross_entropy_grad" in ops_used and "div" not in ops_used  # no 1/p in the backward
    (got,) = run_reference(b.finish([grad]), [logits, labels, weights, extra], {})
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-7, atol=1e-9)
