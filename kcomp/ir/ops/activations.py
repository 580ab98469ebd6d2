"""Every Keras activation as an elementwise (or row-wise) op.

The formulas follow keras.activations (Keras 3): hard_sigmoid is
relu6(x + 3) / 6, gelu is exact unless approximate=True, leaky_relu's default
slope is 0.2, and relu takes Keras's negative_slope / max_value / threshold.
"""

import torch
import torch.nn.functional as F

from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, require_float, same_as_input
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


def activation(name, fn, doc, attrs=None, infer=_float_unary_infer, traits=("elementwise", "unary")) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(1, 1),
        attrs=attrs or {},
        infer=infer,
        reference=fn,
        traits={"activation", *traits},
    )


OPS = [
    activation(
        "relu",
        _relu,
        "max(x, 0); with Keras's negative_slope (below threshold), max_value cap and threshold.",
        attrs={
            "negative_slope": attr(NUMBER, 0.0),
            "max_value": attr(NUMBER, None),
            "threshold": attr(NUMBER, 0.0),
        },
    ),
    activation("sigmoid", torch.sigmoid, "1 / (1 + exp(-x))."),
    activation("tanh", torch.tanh, "Hyperbolic tangent."),
    activation(
        "softmax",
        lambda x, axis: torch.softmax(x, dim=axis),
        "exp(x) / sum(exp(x)) along `axis` (default the last).",
        attrs={"axis": attr(int, -1)},
        infer=_axis_infer,
        traits=(),
    ),
    activation(
        "log_softmax",
        lambda x, axis: torch.log_softmax(x, dim=axis),
        "x - logsumexp(x) along `axis` (default the last).",
        attrs={"axis": attr(int, -1)},
        infer=_axis_infer,
        traits=(),
    ),
    activation(
        "gelu",
        lambda x, approximate: F.gelu(x, approximate="tanh" if approximate else "none"),
        "Gaussian error linear unit: exact erf form, or the tanh approximation.",
        attrs={"approximate": attr(bool, False)},
    ),
    activation(
        "elu",
        lambda x, alpha: torch.where(x > 0, x, alpha * torch.expm1(x)),
        "x if x > 0 else alpha * (exp(x) - 1).",
        attrs={"alpha": attr(NUMBER, 1.0)},
    ),
    activation(
        "selu",
        lambda x: SELU_SCALE * torch.where(x > 0, x, SELU_ALPHA * torch.expm1(x)),
        "Scaled ELU with the fixed constants of Klambauer et al.",
    ),
    activation("softplus", F.softplus, "log(1 + exp(x)), computed stably."),
    activation("softsign", lambda x: x / (1 + torch.abs(x)), "x / (1 + |x|)."),
    activation(
        "leaky_relu",
        lambda x, negative_slope: F.leaky_relu(x, negative_slope),
        "x if x > 0 else negative_slope * x.",
        attrs={"negative_slope": attr(NUMBER, 0.2)},
    ),
    activation("silu", F.silu, "x * sigmoid(x) (Keras's swish)."),
    activation(
        "hard_sigmoid",
        lambda x: torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),
        "relu6(x + 3) / 6, the piecewise-linear sigmoid of Keras 3.",
    ),
    activation(
        "hard_silu",
        lambda x: x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0),
        "x * hard_sigmoid(x) (Keras's hard_silu / hard_swish).",
    ),
    activation("mish", lambda x: x * torch.tanh(F.softplus(x)), "x * tanh(softplus(x))."),
    activation("exponential", torch.exp, "exp(x)."),
    activation("linear", lambda x: x, "The identity."),
]
