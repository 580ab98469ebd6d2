"""Reductions (sum, mean, max) over a set of axes; global pooling lowers to these."""

import torch

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float
from kcomp.ir.ops.grad_support import keepdims_shape, spread_mean
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


def _reduce_with(fn):
    def reduce(x, axes, keepdims):
        dims = _axes(axes, x.dim())
        if not dims:  # torch reads dim=() as "every axis"; an empty set of axes reduces nothing
            return x.clone()
        return fn(x, dim=dims, keepdim=keepdims).to(x.dtype)  # torch.sum widens ints to int64

    return reduce


_sum, _mean, _max = _reduce_with(torch.sum), _reduce_with(torch.mean), _reduce_with(torch.amax)


def _float_reduce_infer(inputs, axes, keepdims):
    require_float(inputs[0], "mean")
    return _reduce_infer(inputs, axes, keepdims)


def _kept(b, node, value):
    """`value` (shaped like the node's output) with the reduced axes back as 1s, so it broadcasts against x."""
    x = node.inputs[0]
    if node.attrs["keepdims"]:
        return value
    return b.emit1("reshape", [value], shape=keepdims_shape(x.shape, _axes(node.attrs["axes"], x.rank)))


def _sum_vjp(b, node, grads):
    # Every element of x adds into its slot once: g, spread back over the reduced axes.
    (g,) = grads
    x = node.inputs[0]
    if not _axes(node.attrs["axes"], x.rank):
        return [g]  # nothing reduced
    return [b.emit1("broadcast_like", [_kept(b, node, g), x])]


def _mean_vjp(b, node, grads):
    (g,) = grads
    x = node.inputs[0]
    axes = _axes(node.attrs["axes"], x.rank)
    if not axes:
        return [g]
    return [spread_mean(b, g, x, axes)]


def _max_vjp(b, node, grads):
    # Like torch.amax: the gradient goes to the maximal elements, split evenly among ties.
    (g,) = grads
    x = node.inputs[0]
    axes = _axes(node.attrs["axes"], x.rank)
    if not axes:
        return [g]
    at_max = b.emit1("equal", [x, _kept(b, node, node.output)])
    ties = b.emit1("sum", [at_max], axes=axes, keepdims=True)
    return [b.emit1("mul", [at_max, b.emit1("div", [_kept(b, node, g), ties])])]


def reduction(name, fn, doc, vjp, infer=_reduce_infer) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(1, 1),
        attrs={"axes": attr(tuple, None, items=int), "keepdims": attr(bool, False)},
        infer=infer,
        reference=fn,
        traits={"reduction"},
        vjp=vjp,
    )


OPS = [
    reduction("sum", _sum, "Sum over `axes` (all axes when None).", _sum_vjp),
    reduction(
        "mean", _mean, "Mean over `axes` (all axes when None); floating-point inputs.", _mean_vjp, _float_reduce_infer
    ),
    reduction("max", _max, "Maximum over `axes` (all axes when None).", _max_vjp),
]
