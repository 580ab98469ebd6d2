"""decompose: rewrite coarse ops into primitives the fusion templates absorb.

A 1x1 convolution with unit strides becomes a matmul of the channels. An LSTM becomes
its input projection and one recurrence op (decompose_recurrent.py). An embedding's gradient
becomes a stable sort of the ids and a sum in that order (decompose_embedding.py).
Binary accuracy's `correct` on float32 becomes its two comparisons, equal(greater(p, threshold), y):
elementwise ops a reduction loads as its prologue (the accuracy's sum), not a torch op per step.

batch_norm in inference form becomes y = x * scale + shift with
scale = gamma / sqrt(var + eps) and shift = beta - mean * scale. scale and
shift depend on weights only, so the runtime computes them once per weight
update, and the two elementwise ops fuse into the epilogue of the conv or
matmul before them.
"""

from kcomp.ir.graph import Node
from kcomp.passes.decompose_embedding import RULES as EMBEDDING_RULES
from kcomp.passes.decompose_recurrent import RULES as LSTM_RULES
from kcomp.passes.decompose_recurrent_gru import RULES as GRU_RULES
from kcomp.passes.rewrite import Rewriter, rewrite_to_fixpoint


def batch_norm_to_scale_shift(node: Node, rw: Rewriter):
    x, mean, var, *rest = node.inputs
    a = node.attrs
    eps = rw.emit1("constant", [], value=float(a["epsilon"]), dtype=var.dtype)
    scale = rw.emit1("rsqrt", [rw.emit1("add", [var, eps])])
    if a["scale"]:
        scale = rw.emit1("mul", [rest.pop(0), scale])
    shift = rw.emit1("neg", [rw.emit1("mul", [mean, scale])])
    if a["center"]:
        shift = rw.emit1("add", [rest.pop(0), shift])
    axis = a["axis"] % x.rank
    if axis != x.rank - 1:
        # Channel vectors broadcast from their axis: (C,) -> (C, 1, ..., 1).
        trailing = (scale.shape[0],) + (1,) * (x.rank - 1 - axis)
        scale = rw.emit1("reshape", [scale], shape=trailing)
        shift = rw.emit1("reshape", [shift], shape=trailing)
    return [rw.emit1("add", [rw.emit1("mul", [x, scale]), shift])]


def pointwise_conv_to_matmul(node: Node, rw: Rewriter):
    """A 1x1 convolution with unit strides is a matmul over the channel axis:
    (N, H, W, C) @ (C, F), so it takes the matmul template and its epilogue."""
    x, kernel = node.inputs
    a = node.attrs
    if kernel.shape[:2] != (1, 1) or a["strides"] != (1, 1) or a["groups"] != 1 or _pooled_later(node, rw):
        return None
    weights = rw.emit1("reshape", [kernel], shape=kernel.shape[2:])
    return [rw.emit1("matmul", [x, weights])]


def _pooled_later(node: Node, rw: Rewriter) -> bool:
    """Whether a 'valid' pool follows the conv through single-use elementwise ops: then the
    conv template, which pools in its epilogue, beats a matmul plus a separate pool."""
    from kcomp.ir.registry import OPS

    v = node.outputs[0]
    while len(users := rw.users.get(v.id, [])) == 1:
        user = users[0]
        if user.op in ("max_pool2d", "avg_pool2d"):
            return user.attrs["padding"] == "valid"
        if "elementwise" not in OPS[user.op].traits:
            return False
        v = user.outputs[0]
    return False


def binary_correct_to_comparisons(node: Node, rw: Rewriter):
    """(y_pred > threshold) == y_true, as the reference computes it, where both are float32 (the
    comparisons give 1.0 / 0.0 in their inputs' dtype, the float32 that correct returns)."""
    y_true, y_pred = node.inputs
    if node.attrs["kind"] != "binary" or y_true.dtype != "float32" or y_pred.dtype != "float32" or y_true.shape != y_pred.shape:
        return None
    threshold = rw.emit1("constant", [], value=float(node.attrs["threshold"]), dtype="float32")
    return [rw.emit1("equal", [rw.emit1("greater", [y_pred, threshold]), y_true])]


RULES = [("batch_norm", batch_norm_to_scale_shift), ("conv2d", pointwise_conv_to_matmul), ("correct", binary_correct_to_comparisons),
         *LSTM_RULES, *GRU_RULES, *EMBEDDING_RULES]


def decompose(graph):
    return rewrite_to_fixpoint(graph, RULES)
