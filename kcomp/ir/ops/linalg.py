"""matmul and bias_add: the anchors of Dense (and, after fusion, its epilogue)."""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef
from kcomp.ir.ops.common import require_float, require_same_dtype
from kcomp.ir.types import TensorSpec, broadcast_shapes


def _matmul_infer(inputs):
    a, b = inputs
    require_float(a, "matmul")
    dtype = require_same_dtype(inputs, "matmul")
    if a.rank < 2 or b.rank < 2:
        raise ShapeError(f"matmul needs inputs of rank >= 2, received {format_shape(a.shape)} and {format_shape(b.shape)}.")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: the last dimension of {format_shape(a.shape)} must equal the first of "
            f"{format_shape(b.shape[-2:])} (received {a.shape[-1]} and {b.shape[-2]})."
        )
    if b.rank == 2:
        # The Dense case: the kernel applies to the last axis of any-rank input.
        return [TensorSpec(a.shape[:-1] + (b.shape[-1],), dtype)]
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return [TensorSpec(batch + (a.shape[-2], b.shape[-1]), dtype)]


def _bias_add_infer(inputs):
    x, bias = inputs
    dtype = require_same_dtype(inputs, "bias_add")
    if bias.rank != 1 or x.rank < 1 or x.shape[-1] != bias.shape[0]:
        raise ShapeError(
            f"bias_add: bias of shape {format_shape(bias.shape)} does not fit the last axis of "
            f"{format_shape(x.shape)}; expected a bias of shape ({x.shape[-1] if x.rank else None},)."
        )
    return [TensorSpec(x.shape, dtype)]


OPS = [
    OpDef(
        name="matmul",
        doc="a @ b over the last two axes; a rank-2 b applies to the last axis of a (Dense).",
        num_inputs=(2, 2),
        attrs={},
        infer=_matmul_infer,
        reference=torch.matmul,
        traits={"linear"},
    ),
    OpDef(
        name="bias_add",
        doc="x + bias, bias a vector over the last axis (channels-last).",
        num_inputs=(2, 2),
        attrs={},
        infer=_bias_add_infer,
        reference=torch.add,
        traits={"elementwise", "binary"},
    ),
]
