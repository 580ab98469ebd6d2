"""Normalization and regularization ops: batch_norm (inference and training
forms), layer_norm and dropout.

batch_norm's optional gamma/beta inputs follow the attrs `scale` / `center`
(Keras's arguments of the same names); inputs are x, mean, variance, then
gamma if scale, then beta if center.
"""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, require_float
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


def _batch_norm(x, mean, var, *rest, axis, epsilon, center, scale):
    return _normalize(x, mean, var, rest, axis, epsilon, center, scale)


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


def _dropout_infer(inputs, rate, seed, training):
    if not 0.0 <= rate < 1.0:
        raise ShapeError(f"Received: rate={rate}. Expected 0 <= rate < 1.")
    require_float(inputs[0], "dropout")
    return [inputs[0]]


def _dropout(x, rate, seed, training):
    if not training or rate == 0.0:
        return x
    gen = torch.Generator(device=x.device).manual_seed(seed)
    keep = torch.rand(x.shape, generator=gen, device=x.device, dtype=torch.float32) >= rate
    return x * keep.to(x.dtype) / (1.0 - rate)  # inverted dropout, as Keras


BN_ATTRS = {
    "axis": attr(int, -1),
    "epsilon": attr(NUMBER, 1e-3),
    "center": attr(bool, True),
    "scale": attr(bool, True),
}

OPS = [
    OpDef(
        name="batch_norm",
        doc="Inference batch normalization with given mean/variance: (x - mean) / sqrt(var + eps) * gamma + beta.",
        num_inputs=(3, 5),
        attrs=BN_ATTRS,
        infer=_bn_infer,
        reference=_batch_norm,
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
        traits={"normalization"},
    ),
    OpDef(
        name="dropout",
        doc="Inverted dropout: in training, zero each element with probability `rate` and scale "
        "the rest by 1/(1-rate), the mask drawn from `seed`; identity otherwise.",
        num_inputs=(1, 1),
        attrs={"rate": attr(NUMBER), "seed": attr(int, 0), "training": attr(bool, False)},
        infer=_dropout_infer,
        reference=_dropout,
        traits={"random", "elementwise", "unary"},
    ),
]
