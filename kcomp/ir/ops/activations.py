"""Every Keras activation as an elementwise (or row-wise) op.

The formulas follow keras.activations (Keras 3): hard_sigmoid is
relu6(x + 3) / 6, gelu is exact unless approximate=True, leaky_relu's default
slope is 0.2, and relu takes Keras's negative_slope / max_value / threshold.
"""

import math

import torch
import torch.nn.functional as F

from kcomp.ir import lowering as triton_expr
from kcomp.ir.lowering import literal, unary
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, require_float, same_as_input
from kcomp.ir.ops.grad_support import drop_where, keep_where, scalar
from kcomp.ir.types import normalize_axis

# SELU's constants (Klambauer et al. 2017), the same values Keras uses.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _float_unary_infer(inputs, **attrs):
    require_float(inputs[0], "activation")
    return same_as_input(inputs)


def _axis_infer(inputs, axis):
    require_float(inputs[0], "softmax")
    normalize_axis(axis, inputs[0].rank)
    return same_as_input(inputs)


def _relu(x, negative_slope, max_value, threshold):
    # Keras's ReLU.static_call (Keras 3.15), torch call for torch call, so that autograd through it
    # gives Keras's gradient too: leaky_relu when only negative_slope is set; else keep x above the
    # threshold (where, so NaN and -inf give 0 there), relu6 or clip to [0, max_value], then
    # subtract the negative-slope part.
    if negative_slope != 0 and max_value is None and threshold == 0:
        return F.leaky_relu(x, negative_slope)
    clip = max_value is not None
    if threshold != 0:
        y = torch.where(x > threshold, x, torch.zeros((), dtype=x.dtype, device=x.device))
    elif max_value == 6:
        y, clip = F.relu6(x), False
    else:
        y = torch.relu(x)
    if clip:
        y = torch.clamp(y, 0.0, max_value)
    if negative_slope != 0:
        y = y - negative_slope * torch.relu(threshold - x)
    return y


def activation(name, fn, doc, vjp, attrs=None, infer=_float_unary_infer, traits=("elementwise", "unary"),
               lowering=None) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(1, 1),
        attrs=attrs or {},
        infer=infer,
        reference=fn,
        traits={"activation", *traits},
        vjp=vjp,
        lowering=lowering,
    )


# ---------------------------------------------------------------- Triton expressions (lowerings)


def _leaky_relu_lowering(args, negative_slope):
    (a,) = args
    return f"tl.where({a} > 0.0, {a}, {literal(negative_slope)} * {a})"  # F.leaky_relu's x > 0


def _relu_lowering(args, negative_slope, max_value, threshold):
    # Keras's order (see _relu): keep above threshold, clip, subtract the negative part.
    (a,) = args
    if negative_slope != 0 and max_value is None and threshold == 0:
        return _leaky_relu_lowering(args, negative_slope)
    y = f"tl.where({a} > {literal(threshold)}, {a}, 0.0)" if threshold != 0 else triton_expr.maximum(a, "0.0")
    if max_value is not None:
        y = triton_expr.clip(y, "0.0", literal(max_value))
    if negative_slope != 0:
        y = f"({y} - {literal(negative_slope)} * {triton_expr.maximum(f'{literal(threshold)} - {a}', '0.0')})"
    return y


def _gelu_lowering(args, approximate):
    (a,) = args
    if approximate:
        inner = f"0.7978845608028654 * ({a} + 0.044715 * {a} * {a} * {a})"
        return f"(0.5 * {a} * (1.0 + {triton_expr.tanh('(' + inner + ')')}))"
    return f"(0.5 * {a} * (1.0 + tl.math.erf({a} * 0.7071067811865476)))"


# ---------------------------------------------------------------- gradient rules
#
# Each rule returns the gradient torch's autograd gives for the op as Keras computes it on its
# torch backend (the registry reference follows the same torch calls), kinks, inf and NaN included
# (at a NaN input, what torch's vectorized loops give: its scalar loop for a tensor's last few
# elements differs there for relu6, hardswish and elu):
# g * f'(x) where f' is smooth, built from registry ops; where the op is piecewise, the pieces
# torch selects with torch.where (keep_where, drop_where, threshold_grad), so a gradient dropped
# there is 0 even where g is inf or NaN. Where f' is easiest in terms of the output (sigmoid, tanh,
# exp, softmax) the rule reads node.output.


def _times(b, node, grads, slope):
    (g,) = grads
    return [b.emit1("mul", [g, slope])]


def _greater(b, p, q):
    return b.emit1("greater", [p, q])


def _at_least(b, p, q):
    """1 where p >= q, 0 where p < q or either is NaN."""
    return b.emit1("greater_equal", [p, q])


def _both(b, *masks):
    out = masks[0]
    for mask in masks[1:]:
        out = b.emit1("mul", [out, mask])
    return out


def _one_or(b, mask, other):
    """1 where the 0/1 mask is 1, else `other`: exact (1 * 1 + other * 0, or 0 + other * 1), where
    other + (1 - other) * mask rounds (1 - 0.1 is not exact in float32)."""
    return b.emit1("add", [mask, b.emit1("mul", [other, b.emit1("sub", [scalar(b, 1.0, mask.dtype), mask])])])


def _relu_vjp(b, node, grads):
    # Keras's relu (ReLU.static_call) is leaky_relu when only negative_slope is set; else the kept
    # part, where(x > threshold, x, 0) or relu(x), then relu6 (max_value 6, no threshold) or
    # clip(., 0, max_value), minus negative_slope * relu(threshold - x). Each piece's gradient is
    # torch's: relu's threshold_backward, hardtanh's and clamp's torch.where.
    (g,) = grads
    x = node.inputs[0]
    a = node.attrs
    threshold, max_value, negative_slope = a["threshold"], a["max_value"], a["negative_slope"]

    def c(value):
        return scalar(b, value, x.dtype)

    if negative_slope != 0 and max_value is None and threshold == 0:
        return [_leaky_relu_grad(b, g, x, negative_slope)]
    if threshold == 0 and max_value is None:
        # Reading the output lets the forward kernel keep x to itself (Dense + bias + relu stays
        # one kernel in a training step); out <= 0 exactly where x <= 0.
        kept = b.emit1("threshold_grad", [g, node.output], threshold=0.0)
    elif threshold == 0 and max_value == 6:  # relu6: hardtanh(x, 0, 6) passes g strictly inside (0, 6)
        kept = keep_where(b, g, _both(b, _greater(b, x, c(0.0)), _greater(b, c(6.0), x)))
    else:
        # where(x > threshold) and clip(., 0, max_value): g passes where x > threshold and, clipped,
        # 0 <= x <= max_value (relu(x) or where(...) equals x at every place the first passes).
        passes = [_greater(b, x, c(threshold))]
        if max_value is not None:
            passes.append(_at_least(b, c(max_value), x))
            if threshold < 0:
                passes.append(_at_least(b, x, c(0.0)))
        kept = keep_where(b, g, _both(b, *passes))
    if negative_slope == 0:
        return [kept]
    # - negative_slope * relu(threshold - x): relu's gradient passes where threshold - x > 0 or NaN.
    below = b.emit1("mul", [c(negative_slope), drop_where(b, g, _at_least(b, x, c(threshold)))])
    return [b.emit1("add", [kept, below])]


def _sigmoid_vjp(b, node, grads):
    out = node.output  # s' = s (1 - s)
    return _times(b, node, grads, b.emit1("mul", [out, b.emit1("sub", [scalar(b, 1.0, out.dtype), out])]))


def _tanh_vjp(b, node, grads):
    out = node.output  # tanh' = 1 - tanh^2
    return _times(b, node, grads, b.emit1("sub", [scalar(b, 1.0, out.dtype), b.emit1("mul", [out, out])]))


def _softmax_vjp(b, node, grads):
    # dx = y * (g - sum(g * y, axis))
    (g,) = grads
    out, axis = node.output, node.attrs["axis"] % node.output.rank
    dot = b.emit1("sum", [b.emit1("mul", [g, out])], axes=(axis,), keepdims=True)
    return [b.emit1("mul", [out, b.emit1("sub", [g, dot])])]


def _log_softmax_vjp(b, node, grads):
    # dx = g - softmax(x) * sum(g, axis), softmax(x) = exp(out)
    (g,) = grads
    out, axis = node.output, node.attrs["axis"] % node.output.rank
    total = b.emit1("sum", [g], axes=(axis,), keepdims=True)
    return [b.emit1("sub", [g, b.emit1("mul", [b.emit1("exponential", [out]), total])])]


def _gelu_vjp(b, node, grads):
    (x,) = node.inputs

    def c(value):
        return scalar(b, value, x.dtype)

    def mul(p, q):
        return b.emit1("mul", [p, q])

    def add(p, q):
        return b.emit1("add", [p, q])

    x2 = mul(x, x)
    if node.attrs["approximate"]:
        # y = x/2 (1 + t), t = tanh(u), u = k (x + 0.044715 x^3), k = sqrt(2 / pi):
        # y' = (1 + t)/2 + x/2 (1 - t^2) u',  u' = k (1 + 3 * 0.044715 x^2)
        k = math.sqrt(2.0 / math.pi)
        t = b.emit1("tanh", [mul(c(k), add(x, mul(c(0.044715), mul(x, x2))))])
        du = mul(c(k), add(c(1.0), mul(c(3 * 0.044715), x2)))
        dt = mul(b.emit1("sub", [c(1.0), mul(t, t)]), du)
        slope = add(mul(c(0.5), add(c(1.0), t)), mul(mul(c(0.5), x), dt))
    else:
        # y = x Phi(x):  y' = Phi(x) + x phi(x),  Phi = (1 + erf(x / sqrt 2)) / 2,  phi = exp(-x^2/2) / sqrt(2 pi)
        cdf = mul(c(0.5), add(c(1.0), b.emit1("erf", [mul(x, c(1.0 / math.sqrt(2.0)))])))
        pdf = mul(c(1.0 / math.sqrt(2.0 * math.pi)), b.emit1("exponential", [mul(c(-0.5), x2)]))
        slope = add(cdf, mul(x, pdf))
    return _times(b, node, grads, slope)


def _elu_like_slope(b, x, scale, alpha):
    """The slope of scale * elu(x, alpha) as torch's elu_backward selects it: scale where x > 0, else
    scale * alpha * e^x (NaN at a NaN x). e^x, not out + scale * alpha: at x = -inf the slope is 0
    in every dtype, as torch's (an inf g there gives NaN, as in torch)."""
    dt = x.dtype
    positive = _greater(b, x, scalar(b, 0.0, dt))
    below = b.emit1("mul", [scalar(b, scale * alpha, dt), b.emit1("exponential", [x])])
    return b.emit1("add", [keep_where(b, scalar(b, scale, dt), positive), drop_where(b, below, positive)])


def _elu_vjp(b, node, grads):
    return _times(b, node, grads, _elu_like_slope(b, node.inputs[0], 1.0, node.attrs["alpha"]))


def _selu_vjp(b, node, grads):
    return _times(b, node, grads, _elu_like_slope(b, node.inputs[0], SELU_SCALE, SELU_ALPHA))


def _softplus_vjp(b, node, grads):
    return _times(b, node, grads, b.emit1("sigmoid", [node.inputs[0]]))


def _softsign_vjp(b, node, grads):
    # y = x / (1 + |x|):  y' = 1 / (1 + |x|)^2 = (1 - |y|)^2, |y| = max(y, -y)
    out = node.output
    magnitude = b.emit1("maximum", [out, b.emit1("neg", [out])])
    rest = b.emit1("sub", [scalar(b, 1.0, out.dtype), magnitude])
    return _times(b, node, grads, b.emit1("mul", [rest, rest]))


def _leaky_relu_grad(b, g, x, negative_slope):
    """torch's leaky_relu_backward: g where x > 0, else negative_slope * g (NaN x included)."""
    slope = _one_or(b, _greater(b, x, scalar(b, 0.0, x.dtype)), scalar(b, negative_slope, x.dtype))
    return b.emit1("mul", [g, slope])


def _leaky_relu_vjp(b, node, grads):
    return [_leaky_relu_grad(b, grads[0], node.inputs[0], node.attrs["negative_slope"])]


def _silu_vjp(b, node, grads):
    # y = x s(x):  y' = s + y (1 - s)
    x, out = node.inputs[0], node.output
    s = b.emit1("sigmoid", [x])
    slope = b.emit1("add", [s, b.emit1("mul", [out, b.emit1("sub", [scalar(b, 1.0, x.dtype), s])])])
    return _times(b, node, grads, slope)


# torch's hardsigmoid_backward multiplies by 1/6 rounded to float32, in float64 too.
TORCH_ONE_SIXTH = float(torch.tensor(1.0 / 6.0, dtype=torch.float32))


def _hard_sigmoid_vjp(b, node, grads):
    # torch's hardsigmoid_backward: g / 6 strictly inside (-3, 3), else 0 (NaN included)
    (g,) = grads
    x = node.inputs[0]
    dt = x.dtype
    inside = _both(b, _greater(b, x, scalar(b, -3.0, dt)), _greater(b, scalar(b, 3.0, dt), x))
    return [keep_where(b, b.emit1("mul", [g, scalar(b, TORCH_ONE_SIXTH, dt)]), inside)]


def _hard_silu_vjp(b, node, grads):
    # torch's hardswish_backward: 0 at x <= -3; g at x >= 3; g * (x / 3 + 1/2) between (NaN at a NaN x)
    (g,) = grads
    x = node.inputs[0]
    dt = x.dtype
    from_3 = _at_least(b, x, scalar(b, 3.0, dt))
    middle = b.emit1("add", [b.emit1("div", [x, scalar(b, 3.0, dt)]), scalar(b, 0.5, dt)])
    slope = b.emit1("add", [keep_where(b, scalar(b, 1.0, dt), from_3), drop_where(b, middle, from_3)])
    return [drop_where(b, b.emit1("mul", [g, slope]), _at_least(b, scalar(b, -3.0, dt), x))]


def _mish_vjp(b, node, grads):
    # y = x t, t = tanh(softplus(x)):  y' = t + x (1 - t^2) sigmoid(x)
    x = node.inputs[0]
    t = b.emit1("tanh", [b.emit1("softplus", [x])])
    dt = b.emit1("mul", [b.emit1("sub", [scalar(b, 1.0, x.dtype), b.emit1("mul", [t, t])]), b.emit1("sigmoid", [x])])
    return _times(b, node, grads, b.emit1("add", [t, b.emit1("mul", [x, dt])]))


def _exponential_vjp(b, node, grads):
    return _times(b, node, grads, node.output)


def _linear_vjp(b, node, grads):
    return list(grads)


OPS = [
    activation(
        "relu",
        _relu,
        "max(x, 0); with Keras's negative_slope (below threshold), max_value cap and threshold.",
        _relu_vjp,
        attrs={
            "negative_slope": attr(NUMBER, 0.0),
            "max_value": attr(NUMBER, None),
            "threshold": attr(NUMBER, 0.0),
        },
        lowering=_relu_lowering,
    ),
    activation("sigmoid", torch.sigmoid, "1 / (1 + exp(-x)).", _sigmoid_vjp, lowering=unary("tl.sigmoid({a})")),
    activation("tanh", torch.tanh, "Hyperbolic tangent.", _tanh_vjp, lowering=lambda args: triton_expr.tanh(args[0])),
    activation(
        "softmax",
        lambda x, axis: torch.softmax(x, dim=axis),
        "exp(x) / sum(exp(x)) along `axis` (default the last).",
        _softmax_vjp,
        attrs={"axis": attr(int, -1)},
        infer=_axis_infer,
        traits=(),
    ),
    activation(
        "log_softmax",
        lambda x, axis: torch.log_softmax(x, dim=axis),
        "x - logsumexp(x) along `axis` (default the last).",
        _log_softmax_vjp,
        attrs={"axis": attr(int, -1)},
        infer=_axis_infer,
        traits=(),
    ),
    activation(
        "gelu",
        lambda x, approximate: F.gelu(x, approximate="tanh" if approximate else "none"),
        "Gaussian error linear unit: exact erf form, or the tanh approximation.",
        _gelu_vjp,
        attrs={"approximate": attr(bool, False)},
        lowering=_gelu_lowering,
    ),
    activation(
        "elu",
        lambda x, alpha: F.elu(x, alpha),
        "x if x > 0 else alpha * (exp(x) - 1).",
        _elu_vjp,
        attrs={"alpha": attr(NUMBER, 1.0)},
        lowering=lambda args, alpha: f"tl.where({args[0]} > 0.0, {args[0]}, {literal(alpha)} * (tl.exp({args[0]}) - 1.0))",
    ),
    activation(
        "selu",
        F.selu,
        "Scaled ELU with the fixed constants of Klambauer et al.",
        _selu_vjp,
        lowering=unary(f"({literal(SELU_SCALE)} * tl.where({{a}} > 0.0, {{a}}, {literal(SELU_ALPHA)} * (tl.exp({{a}}) - 1.0)))"),
    ),
    activation("softplus", F.softplus, "log(1 + exp(x)), computed stably.", _softplus_vjp,
               lowering=lambda args: triton_expr.softplus(args[0])),
    activation("softsign", lambda x: x / (1 + torch.abs(x)), "x / (1 + |x|).", _softsign_vjp,
               lowering=unary("({a} / (1.0 + tl.abs({a})))")),
    activation(
        "leaky_relu",
        lambda x, negative_slope: F.leaky_relu(x, negative_slope),
        "x if x > 0 else negative_slope * x.",
        _leaky_relu_vjp,
        attrs={"negative_slope": attr(NUMBER, 0.2)},
        lowering=_leaky_relu_lowering,
    ),
    activation("silu", F.silu, "x * sigmoid(x) (Keras's swish).", _silu_vjp, lowering=unary("({a} * tl.sigmoid({a}))")),
    activation(
        "hard_sigmoid",
        F.hardsigmoid,
        "relu6(x + 3) / 6, the piecewise-linear sigmoid of Keras 3 (torch's hardsigmoid).",
        _hard_sigmoid_vjp,
        lowering=lambda args: triton_expr.hard_sigmoid(args[0]),
    ),
    activation(
        "hard_silu",
        F.hardswish,
        "x * relu6(x + 3) / 6 (Keras's hard_silu / hard_swish: torch's hardswish).",
        _hard_silu_vjp,
        lowering=lambda args: f"({args[0]} * {triton_expr.clip(f'{args[0]} + 3.0', '0.0', '6.0')} / 6.0)",
    ),
    activation("mish", lambda x: x * torch.tanh(F.softplus(x)), "x * tanh(softplus(x)).", _mish_vjp,
               lowering=lambda args: f"({args[0]} * {triton_expr.tanh(triton_expr.softplus(args[0]))})"),
    activation("exponential", torch.exp, "exp(x).", _exponential_vjp, lowering=unary("tl.exp({a})")),
    activation("linear", lambda x: x, "The identity.", _linear_vjp, lowering=lambda args: args[0]),
]
