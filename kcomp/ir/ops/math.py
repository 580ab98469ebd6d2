"""More math for losses and metrics: log, abs, sign, sqrt, square, one_hot."""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import can_read_back, require_float, same_as_input
from kcomp.ir.types import INT_DTYPES, TensorSpec, check_dtype


def _float_infer(inputs):
    require_float(inputs[0], "math op")
    return same_as_input(inputs)


def _vjp_log(b, node, grads):
    (g,) = grads
    return [b.emit1("div", [g, node.inputs[0]])]


def _vjp_abs(b, node, grads):
    (g,) = grads
    return [b.emit1("mul", [g, b.emit1("sign", node.inputs)])]


def _vjp_sign(b, node, grads):
    return [None]  # zero almost everywhere; nothing flows back


def _vjp_sqrt(b, node, grads):
    (g,) = grads
    half = b.emit1("constant", [], value=0.5, dtype=node.outputs[0].dtype)
    return [b.emit1("div", [b.emit1("mul", [g, half]), node.outputs[0]])]


def _vjp_square(b, node, grads):
    (g,) = grads
    two = b.emit1("constant", [], value=2.0, dtype=node.outputs[0].dtype)
    return [b.emit1("mul", [g, b.emit1("mul", [node.inputs[0], two])])]


def unary(name, fn, doc, vjp):
    return OpDef(name=name, doc=doc, num_inputs=(1, 1), attrs={}, infer=_float_infer, reference=fn,
                 traits={"elementwise", "unary"}, vjp=vjp)


def _one_hot_infer(inputs, depth, dtype):
    ids = inputs[0]
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"one_hot takes integer class ids, received dtype {ids.dtype}.")
    if depth <= 0:
        raise ShapeError(f"Received: depth={depth}. Expected a positive number of classes.")
    return [TensorSpec(ids.shape + (depth,), check_dtype(dtype))]


def _one_hot(ids, depth, dtype):
    from kcomp.ir.types import TORCH_DTYPES

    if ids.numel() and can_read_back(ids) and (int(ids.min()) < 0 or int(ids.max()) >= depth):
        raise ShapeError(
            f"one_hot: class ids must lie in [0, {depth}), received values from {int(ids.min())} to {int(ids.max())}."
        )
    return F.one_hot(ids.long(), depth).to(TORCH_DTYPES[dtype])


OPS = [
    unary("log", torch.log, "Natural logarithm.", _vjp_log),
    unary("abs", torch.abs, "|x|.", _vjp_abs),
    unary("sign", torch.sign, "-1, 0 or 1 by the sign of x.", _vjp_sign),
    unary("sqrt", torch.sqrt, "Square root.", _vjp_sqrt),
    unary("square", torch.square, "x * x.", _vjp_square),
    OpDef(
        name="one_hot",
        doc="Integer class ids (...) -> one-hot rows (..., depth).",
        num_inputs=(1, 1),
        attrs={"depth": attr(int), "dtype": attr(str, "float32")},
        infer=_one_hot_infer,
        reference=_one_hot,
        traits={"gather"},
    ),
]
