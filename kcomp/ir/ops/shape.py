"""Data movement without arithmetic: reshape, transpose, concat, flip, shift."""

from math import prod

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_same_dtype
from kcomp.ir.types import TensorSpec, dim_parts, is_static, normalize_axis, unknown_lengths


def _reshape_infer(inputs, shape):
    x = inputs[0]
    if any(isinstance(d, bool) or not (isinstance(d, str) or (isinstance(d, int) and d > 0)) for d in shape):
        raise ShapeError(
            f"Received: shape={shape}. The IR's reshape takes positive sizes and symbols only "
            "(kcomp.ops.reshape resolves a -1 before it emits the op)."
        )
    # A symbol may be folded with known axes ("N*5": TimeDistributed's batch of steps) and unfolded
    # again, never merged with another symbol: each side's unknown dims are the same symbols, each once.
    in_symbols = sorted(dim_parts(d)[0] for d in x.shape if not is_static(d))
    out_symbols = sorted(dim_parts(d)[0] for d in shape if isinstance(d, str))
    if in_symbols != out_symbols:
        raise ShapeError(
            f"reshape from {format_shape(x.shape)} to {format_shape(shape)}: the dimensions unknown at build time "
            f"{in_symbols} must be kept, each once (only folded with known axes)."
        )
    if len(out_symbols) > 1:
        raise ShapeError(f"reshape to {format_shape(shape)}: only one dimension may be unknown at build time, received {len(out_symbols)}.")
    in_size, out_size = _known_elements(x.shape), _known_elements(shape)
    if in_size != out_size:
        raise ShapeError(f"cannot reshape {format_shape(x.shape)} ({in_size} elements per item) to {format_shape(shape)} ({out_size}).")
    return [TensorSpec(tuple(shape), x.dtype)]


def _known_elements(shape) -> int:
    """Elements per unit of the unknown size: the static dims times a folded symbol's factor."""
    return prod(d if is_static(d) else dim_parts(d)[1] for d in shape)


def resolve_reshape(in_shape, target) -> tuple:
    """Replace the one -1 of `target` by the size that keeps the element count (of the known sizes; a
    folded symbol "N*5" counts its factor)."""
    target = tuple(target)
    if target.count(-1) > 1:
        raise ShapeError(f"Received: shape={target}. At most one dimension may be -1.")
    if -1 not in target:
        return target
    in_size = _known_elements(in_shape)
    known = _known_elements(d for d in target if d != -1)
    if known == 0 or in_size % known:
        raise ShapeError(f"cannot reshape {format_shape(in_shape)} to {format_shape(target)}: {in_size} elements per item do not divide by {known}.")
    return tuple(in_size // known if d == -1 else d for d in target)


def _reshape(x, shape):
    # At most one entry is a symbol (checked by the shape rule): torch infers it.
    return torch.reshape(x, [d if isinstance(d, int) else -1 for d in shape])


def _transpose_infer(inputs, perm):
    x = inputs[0]
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"Received: perm={perm} for a tensor of rank {x.rank}. Expected a permutation of 0..{x.rank - 1}.")
    return [TensorSpec(tuple(x.shape[p] for p in perm), x.dtype)]


def _concat_infer(inputs, axis):
    dtype = require_same_dtype(inputs, "concat")
    first = inputs[0]
    ax = normalize_axis(axis, first.rank)
    total = 0
    for s in inputs:
        same_rank = s.rank == first.rank
        if not same_rank or any(
            s.shape[i] != first.shape[i] and not unknown_lengths(s.shape[i], first.shape[i])
            for i in range(first.rank)
            if i != ax
        ):
            raise ShapeError(
                f"concat along axis {axis} needs matching shapes except on that axis; received "
                + " and ".join(format_shape(t.shape) for t in inputs)
                + "."
            )
        if not is_static(s.shape[ax]):
            raise ShapeError(f"concat along axis {axis}: that axis must have a known size, received {format_shape(s.shape)}.")
        total += s.shape[ax]
    shape = list(first.shape)
    shape[ax] = total
    return [TensorSpec(tuple(shape), dtype)]


def _reshape_vjp(b, node, grads):
    (g,) = grads
    return [b.emit1("reshape", [g], shape=node.inputs[0].shape)]


def _transpose_vjp(b, node, grads):
    (g,) = grads
    perm = node.attrs["perm"]
    inverse = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return [b.emit1("transpose", [g], perm=inverse)]


def _flip_infer(inputs, axis):
    (x,) = inputs
    if not -x.rank <= axis < x.rank:
        raise ShapeError(f"flip: axis {axis} is not an axis of a rank-{x.rank} input {format_shape(x.shape)}.")
    return [x]


def _flip_vjp(b, node, grads):
    (g,) = grads
    return [b.emit1("flip", [g], axis=node.attrs["axis"])]


def _concat_vjp(b, node, grads):
    # Each input gets its own stretch of g along the axis.
    (g,) = grads
    axis = node.attrs["axis"] % g.rank
    pieces, start = [], 0
    for x in node.inputs:
        stop = start + x.shape[axis]
        pieces.append(g if len(node.inputs) == 1 else b.emit1("slice", [g], axis=axis, start=start, stop=stop))
        start = stop
    return pieces


def _shift_infer(inputs, axis, period, by):
    (x,) = inputs
    if not -x.rank <= axis < x.rank:
        raise ShapeError(f"shift: axis {axis} is not an axis of a rank-{x.rank} input {format_shape(x.shape)}.")
    size = x.shape[axis]
    per_item = size if is_static(size) else dim_parts(size)[1]  # "N*7" holds runs of 7 whatever N is
    if period < 1 or per_item % period:
        raise ShapeError(f"shift: Received: period={period} for axis {axis} of {format_shape(x.shape)}. "
                         f"Expected a positive period that divides {per_item}.")
    return [x]


def _shift(x, axis, period, by):
    ax = axis % x.dim()
    runs = x.unflatten(ax, (-1, period))  # (..., runs, period, ...)
    out = torch.zeros_like(runs)
    kept = period - abs(by)
    if kept > 0:
        out.narrow(ax + 1, max(by, 0), kept).copy_(runs.narrow(ax + 1, max(-by, 0), kept))
    return out.flatten(ax, ax + 1)


def _shift_vjp(b, node, grads):
    (g,) = grads
    a = node.attrs
    return [b.emit1("shift", [g], axis=a["axis"], period=a["period"], by=-a["by"])]


OPS = [
    OpDef(
        name="reshape",
        doc="View with a new shape; the symbolic dim (the batch) is kept as its symbol, or folded with known axes (\"N*5\").",
        num_inputs=(1, 1),
        attrs={"shape": attr(tuple, items=(int, str))},
        infer=_reshape_infer,
        reference=_reshape,
        traits={"shape"},
        vjp=_reshape_vjp,
    ),
    OpDef(
        name="transpose",
        doc="Permute the axes: output axis i is input axis perm[i].",
        num_inputs=(1, 1),
        attrs={"perm": attr(tuple, items=int)},
        infer=_transpose_infer,
        reference=lambda x, perm: torch.permute(x, perm),
        traits={"shape"},
        vjp=_transpose_vjp,
    ),
    OpDef(
        name="concat",
        doc="Join tensors along `axis`.",
        num_inputs=(1, None),
        attrs={"axis": attr(int, -1)},
        infer=_concat_infer,
        reference=lambda *xs, axis: torch.cat(xs, dim=axis),
        traits={"shape"},
        vjp=_concat_vjp,
    ),
    OpDef(
        name="flip",
        doc="x in reverse order along `axis` (Bidirectional's backward sequence back in time order).",
        num_inputs=(1, 1),
        attrs={"axis": attr(int)},
        infer=_flip_infer,
        reference=lambda x, axis: torch.flip(x, dims=(axis,)),
        traits={"shape"},
        vjp=_flip_vjp,
    ),
    OpDef(
        name="shift",
        doc="x moved `by` steps along `axis` within each run of `period` elements, zeros where nothing moves in: "
            "by=1 gives out[j] = x[j-1], 0 at each run's first step (an RNN's h_{t-1} from every h_t, the time axis "
            "alone or merged with the batch into rows); by=-1 moves the other way (its gradient).",
        num_inputs=(1, 1),
        attrs={"axis": attr(int), "period": attr(int), "by": attr(int, choices=(1, -1))},
        infer=_shift_infer,
        reference=_shift,
        traits={"shape"},
        vjp=_shift_vjp,
    ),
]
