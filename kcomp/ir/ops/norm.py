"""Normalization and regularization ops: batch_norm (inference and training
forms), layer_norm and dropout, each with its gradient rule.

batch_norm's optional gamma/beta inputs follow the attrs `scale` / `center`
(Keras's arguments of the same names); inputs are x, mean, variance, then
gamma if scale, then beta if center.
"""

import torch

from kcomp.random import keep_mask
from kcomp.errors import ShapeError, format_shape
from kcomp.ir.lowering import literal
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, require_float
from kcomp.ir.ops.grad_support import spread_mean
from kcomp.ir.types import TensorSpec, normalize_axis


def _broadcast_to_axis(v, rank, axis):
    shape = [1] * rank
    shape[axis] = -1
    return v.reshape(shape)


def _check_channel_params(x, params, axis, what):
    ax = normalize_axis(axis, x.rank)
    for p in params:
        if p.shape != (x.shape[ax],):
            raise ShapeError(
                f"{what}: parameter of shape {format_shape(p.shape)} does not fit axis {axis} of input "
                f"{format_shape(x.shape)}; expected ({x.shape[ax]},)."
            )
    return ax


def _bn_arity(center, scale):
    return 3 + int(scale) + int(center)


def _bn_check(inputs, axis, center, scale):
    x = inputs[0]
    require_float(x, "batch_norm")
    if len(inputs) != _bn_arity(center, scale):
        raise ShapeError(f"batch_norm with center={center}, scale={scale} takes {_bn_arity(center, scale)} inputs, received {len(inputs)}.")
    _check_channel_params(x, inputs[1:], axis, "batch_norm")


def _bn_infer(inputs, axis, epsilon, center, scale):
    _bn_check(inputs, axis, center, scale)
    return [inputs[0]]


def _normalize(x, mean, var, rest, axis, epsilon, center, scale):
    ax = axis % x.dim()
    y = (x - _broadcast_to_axis(mean, x.dim(), ax)) * _broadcast_to_axis(torch.rsqrt(var + epsilon), x.dim(), ax)
    rest = list(rest)
    if scale:
        y = y * _broadcast_to_axis(rest.pop(0), x.dim(), ax)
    if center:
        y = y + _broadcast_to_axis(rest.pop(0), x.dim(), ax)
    return y


# ---------------------------------------------------------------- gradient helpers
#
# With xhat = (x - mean) * r and r = rsqrt(var + eps), the gradient through a
# normalization over axes A with batch statistics is the classic
#     dx = r * (gxhat - mean_A(gxhat) - xhat * mean_A(gxhat * xhat)),  gxhat = dy * gamma,
# written with `mean` so no count of the (batch-sized) axes is needed at build time.


def _const(b, value, dtype):
    return b.emit1("constant", [], value=float(value), dtype=dtype)


def _along(b, v, rank, axis):
    """A per-channel vector (C,) shaped to broadcast along `axis` of a rank-`rank` tensor."""
    if axis == rank - 1:
        return v
    return b.emit1("reshape", [v], shape=(v.shape[0],) + (1,) * (rank - 1 - axis))


def _rsqrt_plus_eps(b, var, epsilon):
    return b.emit1("rsqrt", [b.emit1("add", [var, _const(b, epsilon, var.dtype)])])


def _normalization_dx(b, gxhat, xhat, r, axes):
    mean_g = b.emit1("mean", [gxhat], axes=axes, keepdims=True)
    mean_gx = b.emit1("mean", [b.emit1("mul", [gxhat, xhat])], axes=axes, keepdims=True)
    centered = b.emit1("sub", [b.emit1("sub", [gxhat, mean_g]), b.emit1("mul", [xhat, mean_gx])])
    return b.emit1("mul", [centered, r])


def _batch_stats(b, x, axes, epsilon):
    """(x - mean, rsqrt(var + eps)) over `axes` with kept dims, recomputed from x as the forward does."""
    mean = b.emit1("mean", [x], axes=axes, keepdims=True)
    centered = b.emit1("sub", [x, mean])
    var = b.emit1("mean", [b.emit1("mul", [centered, centered])], axes=axes, keepdims=True)
    return centered, _rsqrt_plus_eps(b, var, epsilon)


def _batch_norm(x, mean, var, *rest, axis, epsilon, center, scale):
    return _normalize(x, mean, var, rest, axis, epsilon, center, scale)


def _batch_norm_vjp(b, node, grads):
    """y = (x - mean) * r * gamma + beta with given mean and var: every input gets a gradient."""
    (dy,) = grads
    x, mean, var, *rest = node.inputs
    a = node.attrs
    ax = a["axis"] % x.rank
    others = tuple(d for d in range(x.rank) if d != ax)
    gamma = rest[0] if a["scale"] else None
    r = _rsqrt_plus_eps(b, var, a["epsilon"])
    scale = b.emit1("mul", [r, gamma]) if gamma is not None else r
    dx = b.emit1("mul", [dy, _along(b, scale, x.rank, ax)])
    centered = b.emit1("sub", [x, _along(b, mean, x.rank, ax)])
    sum_dy = b.emit1("sum", [dy], axes=others)
    sum_dy_centered = b.emit1("sum", [b.emit1("mul", [dy, centered])], axes=others)
    dmean = b.emit1("neg", [b.emit1("mul", [sum_dy, scale])])
    # d r / d var = -r^3 / 2, so d var = sum(dy * (x - mean)) * gamma * r * r * (-1/2).
    half_r2 = b.emit1("mul", [b.emit1("mul", [r, r]), _const(b, -0.5, x.dtype)])
    dvar = b.emit1("mul", [b.emit1("mul", [sum_dy_centered, scale]), half_r2])
    out = [dx, dmean, dvar]
    if a["scale"]:
        out.append(b.emit1("mul", [sum_dy_centered, r]))
    if a["center"]:
        out.append(sum_dy)
    return out


def _bn_train_infer(inputs, axis, epsilon, center, scale):
    _bn_check(inputs, axis, center, scale)
    x = inputs[0]
    stat = TensorSpec((x.shape[normalize_axis(axis, x.rank)],), x.dtype)
    return [x, stat, stat]


def _batch_norm_train(x, moving_mean, moving_var, *rest, axis, epsilon, center, scale):
    ax = axis % x.dim()
    dims = [d for d in range(x.dim()) if d != ax]
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)  # Keras normalizes with the biased variance
    return _normalize(x, mean, var, rest, axis, epsilon, center, scale), mean, var


def _batch_norm_train_vjp(b, node, grads):
    """Gradients of y, the batch mean and the biased batch variance all flow into x; the
    moving statistics are only passed through (no gradient)."""
    dy, dmean, dvar = grads
    x, _, _, *rest = node.inputs
    a = node.attrs
    ax = a["axis"] % x.rank
    others = tuple(d for d in range(x.rank) if d != ax)
    centered, r = _batch_stats(b, x, others, a["epsilon"])
    dx = dgamma = dbeta = None
    if dy is not None:
        xhat = b.emit1("mul", [centered, r])
        gxhat = b.emit1("mul", [dy, _along(b, rest[0], x.rank, ax)]) if a["scale"] else dy
        dx = _normalization_dx(b, gxhat, xhat, r, others)
        dgamma = b.emit1("sum", [b.emit1("mul", [dy, xhat])], axes=others)
        dbeta = b.emit1("sum", [dy], axes=others)
    if dmean is not None:  # d mean / d x = 1 / count
        term = spread_mean(b, dmean, x, others)
        dx = term if dx is None else b.emit1("add", [dx, term])
    if dvar is not None:  # d var / d x = 2 (x - mean) / count
        spread = spread_mean(b, dvar, x, others)
        term = b.emit1("mul", [b.emit1("mul", [spread, centered]), _const(b, 2.0, x.dtype)])
        dx = term if dx is None else b.emit1("add", [dx, term])
    return [dx, None, None] + ([dgamma] if a["scale"] else []) + ([dbeta] if a["center"] else [])


def _ln_infer(inputs, axes, epsilon, center, scale):
    x = inputs[0]
    require_float(x, "layer_norm")
    if len(inputs) != 1 + int(scale) + int(center):
        raise ShapeError(f"layer_norm with center={center}, scale={scale} takes {1 + scale + center} inputs, received {len(inputs)}.")
    norm = sorted({normalize_axis(a, x.rank, "axis") for a in axes})
    if len(norm) != len(axes):
        raise ShapeError(f"Received: axes={axes} with a repeated axis. Name each axis once.")
    want = tuple(x.shape[a] for a in norm)
    for p in inputs[1:]:
        if p.shape != want:
            raise ShapeError(f"layer_norm: parameter of shape {format_shape(p.shape)} does not fit input {format_shape(x.shape)} over axes {axes}; expected {want}.")
    return [x]


def _layer_norm(x, *rest, axes, epsilon, center, scale):
    norm = sorted(a % x.dim() for a in axes)
    mean = x.mean(dim=norm, keepdim=True)
    var = x.var(dim=norm, keepdim=True, unbiased=False)
    y = (x - mean) * torch.rsqrt(var + epsilon)
    # Parameters span the normalized axes; broadcast them back into place.
    param_shape = [x.shape[d] if d in norm else 1 for d in range(x.dim())]
    rest = list(rest)
    if scale:
        y = y * rest.pop(0).reshape(param_shape)
    if center:
        y = y + rest.pop(0).reshape(param_shape)
    return y


def _sum_over(b, v, axes):
    return b.emit1("sum", [v], axes=axes) if axes else v


def _layer_norm_vjp(b, node, grads):
    (dy,) = grads
    x, *rest = node.inputs
    a = node.attrs
    axes = tuple(sorted(d % x.rank for d in a["axes"]))
    others = tuple(d for d in range(x.rank) if d not in axes)
    centered, r = _batch_stats(b, x, axes, a["epsilon"])
    xhat = b.emit1("mul", [centered, r])
    gxhat = dy
    out = []
    if a["scale"]:
        gamma = rest[0]
        placed = tuple(x.shape[d] if d in axes else 1 for d in range(x.rank))[axes[0]:]
        if gamma.shape != placed:
            gamma = b.emit1("reshape", [gamma], shape=placed)
        gxhat = b.emit1("mul", [dy, gamma])
        out.append(_sum_over(b, b.emit1("mul", [dy, xhat]), others))
    if a["center"]:
        out.append(_sum_over(b, dy, others))
    return [_normalization_dx(b, gxhat, xhat, r, axes), *out]


def _dropout_infer(inputs, rate, seed, training):
    if not 0.0 <= rate < 1.0:
        raise ShapeError(f"Received: rate={rate}. Expected 0 <= rate < 1.")
    require_float(inputs[0], "dropout")
    if len(inputs) == 2 and inputs[1].shape != ():
        raise ShapeError(f"dropout: the step input must be a scalar, received shape {inputs[1].shape}.")
    return [inputs[0]]


def _dropout(x, *step, rate, seed, training):
    if not training or rate == 0.0:
        return x
    # The mask is Philox of (seed, step, flat index) (kcomp/random.py): the same bits a generated
    # kernel draws, and a training step passes its step count as a tensor, so each step draws a
    # new mask (as Keras's seed generator does) without reading the step on the host.
    return dropout_with_mask(x, keep_mask(x.shape, rate, seed, step[0] if step else None, x.device), rate)


def dropout_with_mask(x, keep, rate):
    """Inverted dropout, as Keras, of x with its keep mask: the reference executor reuses one mask for
    the dropouts of a step that draw the same one (a dropout and its gradient; kcomp.runtime.reference)."""
    # Computed as a kernel does: in float32 (float64 stays float64), times the float32 1 / (1 - rate).
    compute = torch.promote_types(x.dtype, torch.float32)
    scale = torch.tensor(1.0 / (1.0 - rate), dtype=compute, device=x.device)
    return torch.where(keep, x.to(compute) * scale, 0.0).to(x.dtype)


def _dropout_vjp(b, node, grads):
    """The mask is a function of (seed, step, element index): the gradient is dropout of the
    gradient with the same seed, rate and step input, so it keeps the same elements."""
    (dy,) = grads
    a = node.attrs
    if not a["training"] or a["rate"] == 0.0:
        return [dy] + [None] * (len(node.inputs) - 1)
    return [b.emit1("dropout", [dy, *node.inputs[1:]], **a)] + [None] * (len(node.inputs) - 1)


BN_ATTRS = {
    "axis": attr(int, -1),
    "epsilon": attr(NUMBER, 1e-3),
    "center": attr(bool, True),
    "scale": attr(bool, True),
}

def dropout_draws(rate, training) -> bool:
    """Whether dropout with these attributes draws a mask (else it is the identity)."""
    return training and rate != 0.0


def _dropout_lowering(args, rate, seed, training):
    # Inputs (x, step): the step is the training step's scalar; without one (eager, Monte Carlo
    # dropout in predict) the reference draws at step 0 too. Seed and rate are compile-time
    # constants; the seed is taken as 64-bit two's complement, as kcomp.random.seed_key does.
    # The generated kernel imports kcomp.kernels.random as `rng` and defines `offs`, each element's
    # flat row-major index (codegen/expr.py: RNG_IMPORT, draws_random).
    if not dropout_draws(rate, training):
        return args[0]
    step = args[1] if len(args) > 1 else "0.0"
    seed = seed & (2**64 - 1)
    scale = literal(1.0 / (1.0 - rate))
    return f"rng.dropout({args[0]}, offs, {step}, SEED={seed}, RATE={literal(rate)}, SCALE={scale})"


OPS = [
    OpDef(
        name="batch_norm",
        doc="Inference batch normalization with given mean/variance: (x - mean) / sqrt(var + eps) * gamma + beta.",
        num_inputs=(3, 5),
        attrs=BN_ATTRS,
        infer=_bn_infer,
        reference=_batch_norm,
        vjp=_batch_norm_vjp,
        traits={"normalization"},
    ),
    OpDef(
        name="batch_norm_train",
        doc="Training batch normalization: normalizes with the batch's mean and biased variance, "
        "and returns them too (outputs y, batch_mean, batch_variance) for the moving-average update.",
        num_inputs=(3, 5),
        attrs=BN_ATTRS,
        infer=_bn_train_infer,
        reference=_batch_norm_train,
        vjp=_batch_norm_train_vjp,
        traits={"normalization", "reduction"},
        num_outputs=3,
    ),
    OpDef(
        name="layer_norm",
        doc="Normalize over `axes` of each item: (x - mean) / sqrt(var + eps) * gamma + beta.",
        num_inputs=(1, 3),
        attrs={
            "axes": attr(tuple, (-1,), items=int),
            "epsilon": attr(NUMBER, 1e-3),
            "center": attr(bool, True),
            "scale": attr(bool, True),
        },
        infer=_ln_infer,
        reference=_layer_norm,
        vjp=_layer_norm_vjp,
        traits={"normalization"},
    ),
    OpDef(
        name="dropout",
        doc="Inverted dropout: in training, zero each element with probability `rate` and scale "
        "the rest by 1/(1-rate); the mask is Philox4x32-10 of (`seed`, the optional step input, the "
        "flat element index) (kcomp/random.py), so each training step draws anew and a kernel draws "
        "the same mask; identity otherwise.",
        num_inputs=(1, 2),
        attrs={"rate": attr(NUMBER), "seed": attr(int, 0), "training": attr(bool, False)},
        infer=_dropout_infer,
        reference=_dropout,
        vjp=_dropout_vjp,
        traits={"random", "elementwise", "unary"},
        lowering=_dropout_lowering,
    ),
]
