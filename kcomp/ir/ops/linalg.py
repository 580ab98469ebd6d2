"""matmul and bias_add: the anchors of Dense (and, after fusion, its epilogue)."""

from math import prod

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.lowering import binary as binary_expr
from kcomp.ir.opdef import OpDef
from kcomp.ir.ops.common import require_float, require_same_dtype
from kcomp.ir.ops.grad_support import unbroadcast
from kcomp.ir.types import TensorSpec, broadcast_shapes, fold_dim, is_static


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


def _swap_last_two(b, v):
    perm = tuple(range(v.rank - 2)) + (v.rank - 1, v.rank - 2)
    return b.emit1("transpose", [v], perm=perm)


def _dense_kernel_grad(b, x, g):
    """d kernel of y = x @ kernel (kernel rank 2): the sum over every leading position of x^T g.

    Every leading axis is merged into one (the batch folded with the static ones, "N*S"), so
    it is one matmul whose contraction runs over batch and positions together: (K, N*S) @
    (N*S, P). With several unknown lengths the leading axes cannot be merged into one
    dimension; then it is a matmul batched over all but the last leading axis, summed.
    """
    lead = x.shape[:-1]
    symbols = [d for d in lead if not is_static(d)]
    static = prod(d for d in lead if is_static(d))
    if len(symbols) <= 1 and x.rank > 2:
        rows = fold_dim(symbols[0], static) if symbols else static
        x = b.emit1("reshape", [x], shape=(rows, x.shape[-1]))
        g = b.emit1("reshape", [g], shape=(rows, g.shape[-1]))
    if x.rank == 2:
        return b.emit1("matmul", [b.emit1("transpose", [x], perm=(1, 0)), g])
    # Several unknown lengths: batched over every leading axis but the last, then summed.
    per_batch = b.emit1("matmul", [_swap_last_two(b, x), g])
    return b.emit1("sum", [per_batch], axes=tuple(range(per_batch.rank - 2)))


def _matmul_vjp(b, node, grads):
    # y = a @ w:  da = g @ w^T,  dw = a^T @ g, each summed over the batch axes broadcasting added.
    (g,) = grads
    a, w = node.inputs
    da = b.emit1("matmul", [g, _swap_last_two(b, w)])
    if w.rank == 2:
        return [da, _dense_kernel_grad(b, a, g)]
    dw = b.emit1("matmul", [_swap_last_two(b, a), g])
    return [unbroadcast(b, da, a), unbroadcast(b, dw, w)]


def _bias_add_infer(inputs):
    x, bias = inputs
    dtype = require_same_dtype(inputs, "bias_add")
    if bias.rank != 1 or x.rank < 1 or x.shape[-1] != bias.shape[0]:
        raise ShapeError(
            f"bias_add: bias of shape {format_shape(bias.shape)} does not fit the last axis of "
            f"{format_shape(x.shape)}; expected a bias of shape ({x.shape[-1] if x.rank else None},)."
        )
    return [TensorSpec(x.shape, dtype)]


def _bias_add_vjp(b, node, grads):
    (g,) = grads
    if g.rank == 1:
        return [g, g]
    return [g, b.emit1("sum", [g], axes=tuple(range(g.rank - 1)))]


OPS = [
    OpDef(
        name="matmul",
        doc="a @ b over the last two axes; a rank-2 b applies to the last axis of a (Dense).",
        num_inputs=(2, 2),
        attrs={},
        infer=_matmul_infer,
        reference=torch.matmul,
        traits={"linear"},
        vjp=_matmul_vjp,
    ),
    OpDef(
        name="bias_add",
        doc="x + bias, bias a vector over the last axis (channels-last).",
        num_inputs=(2, 2),
        attrs={},
        infer=_bias_add_infer,
        reference=torch.add,
        traits={"elementwise", "binary"},
        vjp=_bias_add_vjp,
        lowering=binary_expr("({a} + {b})"),
    ),
]
