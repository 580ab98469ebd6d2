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
from kcomp.ir.ops.grad_support import scalar
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
    # Keras's ReLU.static_call, step by step: keep x above the threshold (else 0),
    # clip to [0, max_value], then subtract the negative-slope part below it.
    y = x * (x > threshold).to(x.dtype) if threshold != 0 else torch.relu(x)
    if max_value is not None:
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


def _relu_lowering(args, negative_slope, max_value, threshold):
    # Keras's order (see _relu): keep above threshold, clip, subtract the negative part.
    # Above a threshold, x * (x > threshold) as Keras and the reference: NaN and -inf give NaN.
    (a,) = args
    y = f"({a} * tl.where({a} > {literal(threshold)}, 1.0, 0.0))" if threshold != 0 else triton_expr.maximum(a, "0.0")
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
# Each rule returns [g * f'(x)], built from registry ops. Where f' is easiest in
# terms of the output (sigmoid, tanh, exp, softmax) the rule reads node.output.
# Piecewise functions use 0/1 masks (`greater`); at a kink each rule picks the
# one-sided derivative torch's autograd gives for the registry reference.


def _times(b, node, grads, slope):
    (g,) = grads
    return [b.emit1("mul", [g, slope])]


def _at_most(b, p, q):
    """1 where p <= q else 0: a closed bound, as torch.clamp passes the gradient at its bounds."""
    return b.emit1("sub", [scalar(b, 1.0, p.dtype), b.emit1("greater", [p, q])])


def _relu_vjp(b, node, grads):
    # The kept part: x where x > threshold, clipped to [0, max_value] when capped (bounds included,
    # as torch.clamp); minus negative_slope * relu(threshold - x), whose slope is 0 at threshold.
    x = node.inputs[0]
    a = node.attrs
    threshold, max_value, negative_slope = a["threshold"], a["max_value"], a["negative_slope"]

    def c(value):
        return scalar(b, value, x.dtype)

    if threshold == 0 and max_value is None and negative_slope == 0:
        # Plain relu: out > 0 exactly where x > 0. Reading the output lets the forward kernel
        # keep x to itself (Dense + bias + relu stays one kernel in a training step).
        return _times(b, node, grads, b.emit1("greater", [node.output, c(0.0)]))
    slope = b.emit1("greater", [x, c(threshold)])
    if max_value is not None:
        slope = b.emit1("mul", [slope, _at_most(b, x, c(max_value))])
        if threshold < 0:  # x in (threshold, 0) is clipped up to 0
            slope = b.emit1("mul", [slope, _at_most(b, c(0.0), x)])
    if negative_slope != 0:
        below = b.emit1("greater", [c(threshold), x])
        slope = b.emit1("add", [slope, b.emit1("mul", [c(negative_slope), below])])
    return _times(b, node, grads, slope)


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


def _elu_like_slope(b, x, out, scale, alpha):
    """The slope of out = scale * elu(x, alpha): scale where x > 0, else scale * alpha * e^x = out + scale * alpha."""
    dt = x.dtype
    positive = b.emit1("greater", [x, scalar(b, 0.0, dt)])
    below = b.emit1("add", [out, scalar(b, scale * alpha, dt)])  # scale * alpha * e^x, finite where selected
    negative = b.emit1("sub", [scalar(b, 1.0, dt), positive])
    return b.emit1(
        "add", [b.emit1("mul", [scalar(b, scale, dt), positive]), b.emit1("mul", [negative, below])]
    )


def _elu_vjp(b, node, grads):
    return _times(b, node, grads, _elu_like_slope(b, node.inputs[0], node.output, 1.0, node.attrs["alpha"]))


def _selu_vjp(b, node, grads):
    return _times(b, node, grads, _elu_like_slope(b, node.inputs[0], node.output, SELU_SCALE, SELU_ALPHA))


def _softplus_vjp(b, node, grads):
    return _times(b, node, grads, b.emit1("sigmoid", [node.inputs[0]]))


def _softsign_vjp(b, node, grads):
    # y = x / (1 + |x|):  y' = 1 / (1 + |x|)^2 = (1 - |y|)^2, |y| = max(y, -y)
    out = node.output
    magnitude = b.emit1("maximum", [out, b.emit1("neg", [out])])
    rest = b.emit1("sub", [scalar(b, 1.0, out.dtype), magnitude])
    return _times(b, node, grads, b.emit1("mul", [rest, rest]))


def _leaky_relu_vjp(b, node, grads):
    # slope ns + (1 - ns) [x > 0]
    x, ns = node.inputs[0], node.attrs["negative_slope"]
    positive = b.emit1("greater", [x, scalar(b, 0.0, x.dtype)])
    slope = b.emit1("add", [scalar(b, ns, x.dtype), b.emit1("mul", [scalar(b, 1.0 - ns, x.dtype), positive])])
    return _times(b, node, grads, slope)


def _silu_vjp(b, node, grads):
    # y = x s(x):  y' = s + y (1 - s)
    x, out = node.inputs[0], node.output
    s = b.emit1("sigmoid", [x])
    slope = b.emit1("add", [s, b.emit1("mul", [out, b.emit1("sub", [scalar(b, 1.0, x.dtype), s])])])
    return _times(b, node, grads, slope)


def _hard_sigmoid_slope(b, x):
    """d/dx clip(x/6 + 1/2, 0, 1) = 1/6 on -3 <= x <= 3 (bounds included, as torch.clamp)."""
    dt = x.dtype
    inside = b.emit1("mul", [_at_most(b, scalar(b, -3.0, dt), x), _at_most(b, x, scalar(b, 3.0, dt))])
    return b.emit1("mul", [scalar(b, 1.0 / 6.0, dt), inside])


def _hard_sigmoid_vjp(b, node, grads):
    return _times(b, node, grads, _hard_sigmoid_slope(b, node.inputs[0]))


def _hard_silu_vjp(b, node, grads):
    # y = x h(x):  y' = h(x) + x h'(x)
    x = node.inputs[0]
    slope = b.emit1("add", [b.emit1("hard_sigmoid", [x]), b.emit1("mul", [x, _hard_sigmoid_slope(b, x)])])
    return _times(b, node, grads, slope)


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
        lambda x, alpha: torch.where(x > 0, x, alpha * torch.expm1(x)),
        "x if x > 0 else alpha * (exp(x) - 1).",
        _elu_vjp,
        attrs={"alpha": attr(NUMBER, 1.0)},
        lowering=lambda args, alpha: f"tl.where({args[0]} > 0.0, {args[0]}, {literal(alpha)} * (tl.exp({args[0]}) - 1.0))",
    ),
    activation(
        "selu",
        lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(x)),
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
        lowering=lambda args, negative_slope: f"tl.where({args[0]} >= 0.0, {args[0]}, {literal(negative_slope)} * {args[0]})",
    ),
    activation("silu", F.silu, "x * sigmoid(x) (Keras's swish).", _silu_vjp, lowering=unary("({a} * tl.sigmoid({a}))")),
    activation(
        "hard_sigmoid",
        lambda x: torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),
        "relu6(x + 3) / 6, the piecewise-linear sigmoid of Keras 3.",
        _hard_sigmoid_vjp,
        lowering=lambda args: triton_expr.hard_sigmoid(args[0]),
    ),
    activation(
        "hard_silu",
        lambda x: x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),
        "x * hard_sigmoid(x) (Keras's hard_silu / hard_swish).",
        _hard_silu_vjp,
        lowering=lambda args: f"({args[0]} * {triton_expr.hard_sigmoid(args[0])})",
    ),
    activation("mish", lambda x: x * torch.tanh(F.softplus(x)), "x * tanh(softplus(x)).", _mish_vjp,
               lowering=lambda args: f"({args[0]} * {triton_expr.tanh(triton_expr.softplus(args[0]))})"),
    activation("exponential", torch.exp, "exp(x).", _exponential_vjp, lowering=unary("tl.exp({a})")),
    activation("linear", lambda x: x, "The identity.", _linear_vjp, lowering=lambda args: args[0]),
]
