"""softmax_cross_entropy: Keras's categorical cross-entropy of a softmax's output, as one op.

The forward follows Keras's formula on probabilities exactly (rescale each row
to sum 1, clip to [eps, 1 - eps], -sum(y * log p)). The gradient goes to the
softmax's INPUT in one step, (p * sum(y) - y) * g, as Keras's TensorFlow
backend does when a loss reads a softmax output: it is the exact gradient of
the unclipped loss, and differs from differentiating through the clip only
where a probability is below eps = 1e-7. Skipping the softmax's own backward
(a row reduction) and the 1/p division is what lets one kernel compute the
loss and its gradient (kcomp.kernels.softmax_xent).

Labels are one-hot/soft (same shape as the probabilities, float) or class ids
(integers, the probabilities' shape without the last axis).
"""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef
from kcomp.ir.ops.common import checked_one_hot, dims_match, require_float
from kcomp.ir.ops.grad_support import Upstream, between, keep_where
from kcomp.ir.types import FLOAT_DTYPES, INT_DTYPES, TensorSpec

EPSILON = 1e-7  # Keras's backend epsilon


def _check_labels(probs, labels, what: str) -> None:
    require_float(probs, what)
    if probs.rank < 1:
        raise ShapeError(f"{what}: probabilities need a class axis, received shape {format_shape(probs.shape)}.")
    if labels.dtype in FLOAT_DTYPES:
        expected = probs.shape
    elif labels.dtype in INT_DTYPES:
        expected = probs.shape[:-1]
    else:
        raise ShapeError(f"{what}: labels of dtype {labels.dtype}; expected float one-hot rows or integer class ids.")
    if len(labels.shape) != len(expected) or not all(dims_match(a, b) for a, b in zip(labels.shape, expected)):
        raise ShapeError(
            f"{what}: labels of shape {format_shape(labels.shape)} do not fit probabilities "
            f"{format_shape(probs.shape)}; expected {format_shape(expected)}."
        )


def _xent_infer(inputs):
    probs, labels = inputs
    _check_labels(probs, labels, "softmax_cross_entropy")
    return [TensorSpec(probs.shape[:-1], probs.dtype)]


def dense_labels(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Class ids -> one-hot rows in the probabilities' dtype; float labels unchanged."""
    if labels.is_floating_point():
        return labels.to(probs.dtype)
    return checked_one_hot(labels, probs.shape[-1], "sparse categorical cross-entropy", probs.dtype)


def _xent(probs, labels):
    # The clip, log, product and negation write over tensors made here (never over the labels, which
    # dense_labels returns as they are when they are float): Keras's values, fewer allocations.
    p = probs / probs.sum(dim=-1, keepdim=True)
    log_p = p.clamp_(EPSILON, 1.0 - EPSILON).log_()
    return log_p.mul_(dense_labels(labels, probs)).sum(dim=-1).neg_()


def _xent_grad_infer(inputs):
    probs, labels, g = inputs
    _check_labels(probs, labels, "softmax_cross_entropy_grad")
    if len(g.shape) != probs.rank - 1 or not all(dims_match(a, b) for a, b in zip(g.shape, probs.shape[:-1])):
        raise ShapeError(
            f"softmax_cross_entropy_grad: gradient {format_shape(g.shape)} does not fit probabilities "
            f"{format_shape(probs.shape)}; expected one value per row."
        )
    return [TensorSpec(probs.shape, probs.dtype)]


def _xent_grad(probs, labels, g):
    y = dense_labels(labels, probs)
    if labels.is_floating_point():
        return (probs * y.sum(dim=-1, keepdim=True) - y) * g.unsqueeze(-1)
    # Class ids: each one-hot row sums to exactly 1 and p * 1 is p, so (p - y) * g is the same values
    # in two passes fewer.
    return y.neg_().add_(probs).mul_(g.unsqueeze(-1))


def softmax_producer(b, probs):
    """The softmax over the last axis that computed `probs` in the graph `b` is building, if any;
    seen through a cast between float types (a mixed-precision model's 16-bit softmax, which the
    loss reads in float32)."""
    for node in reversed(b.nodes):
        if any(v.id == probs.id for v in node.outputs):
            if node.op == "cast" and node.inputs[0].dtype in FLOAT_DTYPES and probs.dtype in FLOAT_DTYPES:
                return softmax_producer(b, node.inputs[0])
            if node.op == "softmax" and node.attrs["axis"] % probs.rank == probs.rank - 1:
                return node
            return None
    return None


def _xent_vjp(b, node, grads):
    (g,) = grads
    probs, labels = node.inputs
    softmax = softmax_producer(b, probs)
    if softmax is not None:
        dlogits = b.emit1("softmax_cross_entropy_grad", [probs, labels, g])
        logits = softmax.inputs[0]
        if dlogits.dtype != logits.dtype:  # the 16-bit logits of a mixed-precision model
            dlogits = b.emit1("cast", [dlogits], dtype=logits.dtype)
        return Upstream(inputs=[None, None], upstream=[(logits, dlogits)])
    return [_probability_grad(b, probs, labels, g), None]


def _probability_grad(b, probs, labels, g):
    """d loss / d probs of Keras's formula, for probabilities no softmax in the graph made:
    with q = p / sum(p) and d_i = -y_i / q_i where eps <= q_i <= 1 - eps (else 0),
    dp_j = (d_j - sum_i d_i q_i) / sum(p), times g per row."""
    def emit(op, *args, **attrs):
        return b.emit1(op, list(args), **attrs)

    def const(value):
        return emit("constant", value=value, dtype=probs.dtype)

    y = labels if labels.dtype in FLOAT_DTYPES else emit("one_hot", labels, depth=probs.shape[-1], dtype=probs.dtype)
    last = probs.rank - 1
    total = emit("sum", probs, axes=(last,), keepdims=True)
    q = emit("div", probs, total)
    # torch.clip's gradient: bounds included; 0 outside even where -y / q is NaN (0 / 0 at q = 0).
    d = keep_where(b, emit("neg", emit("div", y, q)), between(b, q, const(EPSILON), const(1.0 - EPSILON)))
    dot = emit("sum", emit("mul", d, q), axes=(last,), keepdims=True)
    per_row = emit("reshape", g, shape=(*g.shape, 1))
    return emit("mul", emit("div", emit("sub", d, dot), total), per_row)


OPS = [
    OpDef(
        name="softmax_cross_entropy",
        doc="Keras's categorical cross-entropy of softmax probabilities over the last axis: "
        "-sum(labels * log(clip(p / sum(p), 1e-7, 1 - 1e-7))); labels one-hot/soft or class ids. "
        "Its gradient goes straight to the softmax's input.",
        num_inputs=(2, 2),
        attrs={},
        infer=_xent_infer,
        reference=_xent,
        vjp=_xent_vjp,
        traits={"reduction"},
    ),
    OpDef(
        name="softmax_cross_entropy_grad",
        doc="Gradient of softmax_cross_entropy with respect to the softmax's input: "
        "(probs * sum(labels) - labels) * g, g one value per row.",
        num_inputs=(3, 3),
        attrs={},
        infer=_xent_grad_infer,
        reference=_xent_grad,
        traits={"reduction"},  # sums each row's labels
    ),
]
