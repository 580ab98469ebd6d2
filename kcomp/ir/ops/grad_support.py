"""Ops that exist for gradients (built by VJP rules): masks, broadcasts, slices, counts.

Each op is a full record like any other, with its own gradient where it can
appear in a second derivative. The masks are 0/1 in the inputs' float dtype
rather than bool, so `g * greater(x, 0)` (relu's gradient) stays an all-float
elementwise chain that fuses into one kernel.

The helpers at the top are shared by the VJP rules of the other op modules.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.lowering import binary as binary_expr
from kcomp.ir.lowering import literal
from kcomp.ir.lowering import unary as unary_expr
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, broadcast_infer, require_float, same_as_input
from kcomp.ir.types import TensorSpec, broadcast_shapes, is_static, normalize_axis

# Inputs whose values an op never reads, only their (run-time) shape: broadcast_like's
# template and count's input. Passes may swap them for any value of the same shape.
SHAPE_ONLY_INPUTS = {"broadcast_like": (1,), "count": (0,)}


def computed_from(nodes, sources: set[int], through_shapes: bool = True) -> set[int]:
    """Ids of the values whose computation reads any of `sources` (the sources included).
    through_shapes=False: reading only a value's shape (SHAPE_ONLY_INPUTS) does not count."""
    reach = set(sources)
    for node in nodes:
        skip = () if through_shapes else SHAPE_ONLY_INPUTS.get(node.op, ())
        if any(v.id in reach for i, v in enumerate(node.inputs) if i not in skip):
            reach.update(v.id for v in node.outputs)
    return reach

# ---------------------------------------------------------------- helpers for VJP rules


@dataclass
class Upstream:
    """What a VJP rule returns when it knows its input came from an op it differentiates
    through in one step (softmax_cross_entropy of a softmax's output): per-input gradients,
    plus (value, gradient) pairs for values further up the graph. The skipped op then gets
    no gradient from this node; contributions from other readers still reach it."""

    inputs: list
    upstream: list


def reduce_to_shape(b, grad, shape):
    """Sum `grad` over the axes broadcasting added or stretched, back to `shape` (NumPy rules)."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.rank - len(shape)
    axes = list(range(extra))
    for i, d in enumerate(shape):
        if d == 1 and grad.shape[extra + i] != 1:
            axes.append(extra + i)
    if axes:
        grad = b.emit1("sum", [grad], axes=tuple(axes), keepdims=True)
    if grad.shape != tuple(shape):
        grad = b.emit1("reshape", [grad], shape=tuple(shape))
    return grad



def scalar(b, value: float, dtype: str):
    """A scalar constant of `dtype` (broadcasts against any shape)."""
    return b.emit1("constant", [], value=float(value), dtype=dtype)


def unbroadcast(b, grad, like):
    """`grad` summed back to the shape of `like` (undoes NumPy broadcasting)."""
    return reduce_to_shape(b, grad, like.shape)


def element_count(b, x, axes: tuple):
    """How many elements of x a reduction over `axes` combines, in x's dtype: a constant when
    the sizes are static, else a `count` node that reads x's shape at run time (the batch)."""
    if all(is_static(x.shape[a]) for a in axes):
        return scalar(b, math.prod(x.shape[a] for a in axes), x.dtype)
    return b.emit1("count", [x], axes=tuple(axes))


def keepdims_shape(shape, axes) -> tuple:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def spread_mean(b, g, x, axes: tuple):
    """The gradient of mean(x, axes) for its output gradient g (kept or dropped axes): g divided
    by the element count, broadcast back over x. mean's VJP and batch statistics' share it."""
    kept = keepdims_shape(x.shape, axes)
    if g.shape != kept:
        g = b.emit1("reshape", [g], shape=kept)
    return b.emit1("broadcast_like", [b.emit1("div", [g, element_count(b, x, axes)]), x])


# ---------------------------------------------------------------- comparisons as 0/1 masks


def _mask_vjp(b, node, grads):
    return [None, None]  # piecewise constant: zero gradient almost everywhere


def _is_finite_infer(inputs):
    require_float(inputs[0], "is_finite")
    return same_as_input(inputs)


# Gradients that pass g or drop it, as torch's backward of relu, clamp and hardtanh does with
# torch.where: a dropped g is 0 even where it is inf or NaN, where g * mask would give NaN
# (sqrt(relu(x)) has an infinite gradient at x = 0 that relu's gradient drops there).


def keep_where(b, g, mask):
    """g where the 0/1 mask is 1, else 0 (inf and NaN in g dropped with it)."""
    return b.emit1("zeros_where_masked", [g, mask])


def drop_where(b, g, mask):
    """0 where the 0/1 mask is 1, else g. A comparison's mask is 0 at NaN, so a NaN input keeps
    g here (torch's x <= 0 is false at NaN too)."""
    return keep_where(b, g, b.emit1("sub", [scalar(b, 1.0, mask.dtype), mask]))


def between(b, x, low, high):
    """1 where low <= x <= high (both bounds included, as torch.clamp passes its gradient), 0 outside
    and where x is NaN; low and high are values (scalar constants)."""
    return b.emit1("mul", [b.emit1("greater_equal", [x, low]), b.emit1("greater_equal", [high, x])])


def _threshold_grad_infer(inputs, threshold):
    require_float(inputs[0], "threshold_grad")
    return broadcast_infer(inputs)


def _threshold_grad_vjp(b, node, grads):
    (gg,) = grads
    g, x = node.inputs
    return [unbroadcast(b, b.emit1("threshold_grad", [gg, x], threshold=node.attrs["threshold"]), g), None]


def _threshold_grad_lowering(args, threshold):
    g, x = args
    return f"tl.where({x} <= {literal(threshold)}, 0.0, {g})"


def comparison(name: str, fn, doc: str, lowering) -> OpDef:
    def reference(a, b):
        return fn(a, b).to(torch.promote_types(a.dtype, b.dtype))

    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(2, 2),
        attrs={},
        infer=broadcast_infer,
        reference=reference,
        traits={"elementwise", "binary"},
        vjp=_mask_vjp,
        lowering=lowering,
    )


# ---------------------------------------------------------------- broadcast_like


def _broadcast_like_infer(inputs):
    g, like = inputs
    try:
        ok = broadcast_shapes(like.shape, g.shape) == like.shape
    except ShapeError:
        ok = False
    if not ok:
        raise ShapeError(f"broadcast_like: {format_shape(g.shape)} does not broadcast to {format_shape(like.shape)}.")
    return [TensorSpec(like.shape, g.dtype)]


def _broadcast_like(g, like):
    # A contiguous copy rather than a stride-0 view: the kernels that read it want contiguous operands.
    return g.expand(like.shape).clone(memory_format=torch.contiguous_format)


def _broadcast_like_vjp(b, node, grads):
    (g,) = grads
    return [unbroadcast(b, g, node.inputs[0]), None]  # `like` gives only its shape


# ---------------------------------------------------------------- count


def _count_infer(inputs, axes):
    x = inputs[0]
    for a in axes:
        normalize_axis(a, x.rank, "axes")
    return [TensorSpec((), x.dtype)]


def _count(x, axes):
    n = math.prod(x.shape[a] for a in axes)
    return torch.full((), n, dtype=x.dtype, device=x.device)


def _count_vjp(b, node, grads):
    return [None]  # depends on the shape only


# ---------------------------------------------------------------- slice and pad along one axis


def _static_axis(x, axis, what):
    ax = normalize_axis(axis, x.rank)
    if not is_static(x.shape[ax]):
        raise ShapeError(
            f"{what} along axis {axis}: that axis must have a known size, received {format_shape(x.shape)}."
        )
    return ax


def _slice_infer(inputs, axis, start, stop):
    x = inputs[0]
    ax = _static_axis(x, axis, "slice")
    if not 0 <= start < stop <= x.shape[ax]:
        raise ShapeError(
            f"Received: start={start}, stop={stop} for axis {axis} of {format_shape(x.shape)}. "
            f"Expected 0 <= start < stop <= {x.shape[ax]}."
        )
    shape = list(x.shape)
    shape[ax] = stop - start
    return [TensorSpec(tuple(shape), x.dtype)]


def _slice(x, axis, start, stop):
    return x.narrow(axis, start, stop - start).clone(memory_format=torch.contiguous_format)


def _slice_vjp(b, node, grads):
    (g,) = grads
    x = node.inputs[0]
    a = node.attrs
    size = x.shape[a["axis"] % x.rank]
    return [b.emit1("pad", [g], axis=a["axis"], before=a["start"], after=size - a["stop"])]


def _pad_infer(inputs, axis, before, after):
    x = inputs[0]
    ax = _static_axis(x, axis, "pad")
    if before < 0 or after < 0:
        raise ShapeError(f"Received: before={before}, after={after}. Pad sizes must be >= 0.")
    shape = list(x.shape)
    shape[ax] += before + after
    return [TensorSpec(tuple(shape), x.dtype)]


def _pad(x, axis, before, after):
    ax = axis % x.dim()
    return F.pad(x, [0, 0] * (x.dim() - 1 - ax) + [before, after])


def _pad_vjp(b, node, grads):
    (g,) = grads
    x = node.inputs[0]
    a = node.attrs
    size = x.shape[a["axis"] % x.rank]
    return [b.emit1("slice", [g], axis=a["axis"], start=a["before"], stop=a["before"] + size)]


# ---------------------------------------------------------------- erf (for gelu's gradient)


def _float_infer(inputs):
    require_float(inputs[0], "erf")
    return same_as_input(inputs)


def _erf_vjp(b, node, grads):
    (g,) = grads
    (x,) = node.inputs
    # d erf(x) / dx = 2 / sqrt(pi) * exp(-x^2)
    minus_x2 = b.emit1("neg", [b.emit1("mul", [x, x])])
    slope = b.emit1("mul", [scalar(b, 2.0 / math.sqrt(math.pi), x.dtype), b.emit1("exponential", [minus_x2])])
    return [b.emit1("mul", [g, slope])]


OPS = [
    comparison("greater", torch.gt, "1 where a > b else 0, in the inputs' dtype (a mask to multiply by); broadcasts.",
               binary_expr("tl.where({a} > {b}, 1.0, 0.0)")),
    comparison("greater_equal", torch.ge, "1 where a >= b else 0 (0 where either is NaN), in the inputs' dtype; broadcasts.",
               binary_expr("tl.where({a} >= {b}, 1.0, 0.0)")),
    OpDef(
        name="threshold_grad",
        doc="g where x > threshold, 0 where x <= threshold, g where x is NaN: torch's threshold_backward, "
        "relu's gradient read from its output. One pass where g * greater(x, 0) takes two and gives NaN "
        "for an inf or NaN g that relu drops.",
        num_inputs=(2, 2),
        attrs={"threshold": attr(NUMBER)},
        infer=_threshold_grad_infer,
        reference=lambda g, x, threshold: torch.ops.aten.threshold_backward(g, x, threshold),
        traits={"elementwise", "binary"},
        vjp=_threshold_grad_vjp,
        lowering=_threshold_grad_lowering,
    ),
    comparison("equal", torch.eq, "1 where a == b else 0, in the inputs' dtype (a mask to multiply by); broadcasts.",
               binary_expr("tl.where({a} == {b}, 1.0, 0.0)")),
    OpDef(
        name="is_finite",
        doc="1 where x is finite else 0 (inf and NaN give 0), in x's dtype: dynamic loss scaling's check of the gradients.",
        num_inputs=(1, 1),
        attrs={},
        infer=_is_finite_infer,
        reference=lambda x: torch.isfinite(x).to(x.dtype),
        traits={"elementwise", "unary"},
        vjp=lambda b, node, grads: [None],  # piecewise constant
        # |NaN| < inf and |inf| < inf are both false.
        lowering=unary_expr('tl.where(tl.abs({a}) < float("inf"), 1.0, 0.0)'),
    ),
    OpDef(
        name="broadcast_like",
        doc="g expanded to the shape of `like` as it is at run time (the batch is symbolic); like's values are unused.",
        num_inputs=(2, 2),
        attrs={},
        infer=_broadcast_like_infer,
        reference=_broadcast_like,
        traits={"elementwise", "binary"},
        vjp=_broadcast_like_vjp,
        lowering=binary_expr("({a} + tl.zeros_like({b}))"),  # b gives only the shape
    ),
    OpDef(
        name="count",
        doc="How many elements of x lie over `axes`, from x's run-time shape: a scalar of x's dtype (mean's divisor).",
        num_inputs=(1, 1),
        attrs={"axes": attr(tuple, items=int)},
        infer=_count_infer,
        reference=_count,
        traits={"reduction"},
        vjp=_count_vjp,
    ),
    OpDef(
        name="slice",
        doc="x[start:stop] along `axis` (a static axis); concat's gradient.",
        num_inputs=(1, 1),
        attrs={"axis": attr(int), "start": attr(int), "stop": attr(int)},
        infer=_slice_infer,
        reference=_slice,
        traits={"shape"},
        vjp=_slice_vjp,
    ),
    OpDef(
        name="pad",
        doc="x with `before` zeros in front and `after` zeros behind along `axis` (a static axis); slice's gradient.",
        num_inputs=(1, 1),
        attrs={"axis": attr(int), "before": attr(int), "after": attr(int)},
        infer=_pad_infer,
        reference=_pad,
        traits={"shape"},
        vjp=_pad_vjp,
    ),
    OpDef(
        name="erf",
        doc="The error function (gelu's gradient).",
        num_inputs=(1, 1),
        attrs={},
        infer=_float_infer,
        reference=torch.erf,
        traits={"elementwise", "unary"},
        vjp=_erf_vjp,
        lowering=unary_expr("tl.math.erf({a})"),
    ),
]
