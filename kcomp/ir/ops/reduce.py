"""Reductions (sum, mean, max) over a set of axes; global pooling lowers to these."""

import torch

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.types import TensorSpec, normalize_axis


def _axes(axes, rank):
    if axes is None:
        return tuple(range(rank))
    norm = tuple(sorted({normalize_axis(a, rank, "axes") for a in axes}))
    if len(norm) != len(axes):
        raise ShapeError(f"Received: axes={axes} with a repeated axis. Name each axis once.")
    return norm


def _reduce_infer(inputs, axes, keepdims):
    x = inputs[0]
    red = _axes(axes, x.rank)
    if keepdims:
        shape = tuple(1 if i in red else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in red)
    return [TensorSpec(shape, x.dtype)]


def _sum(x, axes, keepdims):
    return torch.sum(x, dim=_axes(axes, x.dim()), keepdim=keepdims)


def _mean(x, axes, keepdims):
    return torch.mean(x, dim=_axes(axes, x.dim()), keepdim=keepdims)


def _max(x, axes, keepdims):
    return torch.amax(x, dim=_axes(axes, x.dim()), keepdim=keepdims)


def reduction(name, fn, doc) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(1, 1),
        attrs={"axes": attr(tuple, None), "keepdims": attr(bool, False)},
        infer=_reduce_infer,
        reference=fn,
        traits={"reduction"},
    )


OPS = [
    reduction("sum", _sum, "Sum over `axes` (all axes when None)."),
    reduction("mean", _mean, "Mean over `axes` (all axes when None)."),
    reduction("max", _max, "Maximum over `axes` (all axes when None)."),
]
