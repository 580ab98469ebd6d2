"""Elementwise arithmetic with NumPy broadcasting, constants and casts.

Each op's gradient (VJP) rule sits next to its shape rule: it gets the
builder, the forward node and the gradient of the output, and returns one
gradient per input, summed back over the axes broadcasting stretched.
"""

import torch

from kcomp.ir import lowering as triton_expr
from kcomp.ir.lowering import binary as binary_expr
from kcomp.ir.lowering import unary as unary_expr
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, broadcast_infer, require_float, same_as_input
from kcomp.ir.ops.grad_support import between, drop_where, keep_where, scalar, unbroadcast
from kcomp.ir.types import DTYPES, FLOAT_DTYPES, TORCH_DTYPES, TensorSpec, check_dtype


def _float_broadcast_infer(inputs):
    require_float(inputs[0], "div")
    return broadcast_infer(inputs)


def binary(name: str, fn, doc: str, vjp, lowering, infer=broadcast_infer) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(2, 2),
        attrs={},
        infer=infer,
        reference=fn,
        traits={"elementwise", "binary"},
        vjp=vjp,
        lowering=lowering,
    )


def _zeros_where_masked_ref(x, mask):
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _zeros_where_masked_vjp(b, node, grads):
    (g,) = grads
    x, mask = node.inputs
    return [unbroadcast(b, b.emit1("zeros_where_masked", [g, mask]), x), None]  # the mask is data, not a weight


def _add_vjp(b, node, grads):
    (g,) = grads
    x, y = node.inputs
    return [unbroadcast(b, g, x), unbroadcast(b, g, y)]


def _sub_vjp(b, node, grads):
    (g,) = grads
    x, y = node.inputs
    return [unbroadcast(b, g, x), unbroadcast(b, b.emit1("neg", [g]), y)]


def _mul_vjp(b, node, grads):
    (g,) = grads
    x, y = node.inputs
    return [unbroadcast(b, b.emit1("mul", [g, y]), x), unbroadcast(b, b.emit1("mul", [g, x]), y)]


def _div_vjp(b, node, grads):
    # out = x / y:  d/dx = g / y,  d/dy = -g * x / y^2 = -(g / y) * out
    (g,) = grads
    x, y = node.inputs
    g_over_y = b.emit1("div", [g, y])
    dy = b.emit1("neg", [b.emit1("mul", [g_over_y, node.output])])
    return [unbroadcast(b, g_over_y, x), unbroadcast(b, dy, y)]


def _extremum_vjp(b, node, grads):
    """maximum/minimum as torch's autograd: the input that won gets g, the one that lost 0 (even
    where g is inf or NaN), each gets g / 2 on a tie, and both get g where either is NaN."""
    (g,) = grads
    x, y = node.inputs
    winner, loser = (x, y) if node.op == "maximum" else (y, x)
    tie = b.emit1("equal", [x, y])
    shared = b.emit1("add", [keep_where(b, b.emit1("mul", [g, scalar(b, 0.5, g.dtype)]), tie), drop_where(b, g, tie)])
    dx = drop_where(b, shared, b.emit1("greater", [loser, winner]))
    dy = drop_where(b, shared, b.emit1("greater", [winner, loser]))
    return [unbroadcast(b, dx, x), unbroadcast(b, dy, y)]


def _clip_infer(inputs, low, high):
    require_float(inputs[0], "clip")
    return same_as_input(inputs)


def _clip_vjp(b, node, grads):
    # torch.clamp's backward: g where low <= x <= high, bounds included; else 0 (NaN x included).
    (g,) = grads
    x = node.inputs[0]
    low, high = (scalar(b, node.attrs[k], x.dtype) for k in ("low", "high"))
    return [keep_where(b, g, between(b, x, low, high))]


def _neg_vjp(b, node, grads):
    (g,) = grads
    return [b.emit1("neg", [g])]


def _float_unary_infer(inputs):
    require_float(inputs[0], "rsqrt")
    return same_as_input(inputs)


def _rsqrt_vjp(b, node, grads):
    # d x^(-1/2) / dx = -1/2 x^(-3/2) = -1/2 out^3
    (g,) = grads
    out = node.output
    cube = b.emit1("mul", [out, b.emit1("mul", [out, out])])
    return [b.emit1("mul", [g, b.emit1("mul", [scalar(b, -0.5, out.dtype), cube])])]


def _constant_infer(inputs, value, dtype):
    return [TensorSpec((), check_dtype(dtype))]


def _constant_ref(value, dtype):
    return torch.tensor(value, dtype=TORCH_DTYPES[dtype])


def _constant_vjp(b, node, grads):
    return []  # no inputs


def _cast_infer(inputs, dtype):
    return [TensorSpec(inputs[0].shape, check_dtype(dtype))]


def _cast_vjp(b, node, grads):
    """float -> float: the gradient cast back; to or from integers (or bool): none (truncation is flat)."""
    (g,) = grads
    (x,) = node.inputs
    if x.dtype not in FLOAT_DTYPES or node.output.dtype not in FLOAT_DTYPES:
        return [None]
    return [g if g.dtype == x.dtype else b.emit1("cast", [g], dtype=x.dtype)]


OPS = [
    binary("add", torch.add, "a + b with broadcasting.", _add_vjp, binary_expr("({a} + {b})")),
    binary("sub", torch.sub, "a - b with broadcasting.", _sub_vjp, binary_expr("({a} - {b})")),
    binary("mul", torch.mul, "a * b with broadcasting.", _mul_vjp, binary_expr("({a} * {b})")),
    binary(
        "div", torch.div, "a / b with broadcasting (true division of floating-point inputs).", _div_vjp,
        binary_expr("({a} / {b})"), _float_broadcast_infer,
    ),
    binary("maximum", torch.maximum, "Elementwise max(a, b) with broadcasting.", _extremum_vjp,
           lambda args: triton_expr.maximum(*args)),
    binary("minimum", torch.minimum, "Elementwise min(a, b) with broadcasting.", _extremum_vjp,
           lambda args: triton_expr.minimum(*args)),
    OpDef(
        name="clip",
        doc="x clipped to [low, high] (number bounds): torch.clamp, as Keras's clip calls it. Its gradient "
        "passes at the bounds too, where minimum(maximum(x, low), high) would pass half.",
        num_inputs=(1, 1),
        attrs={"low": attr(NUMBER), "high": attr(NUMBER)},
        infer=_clip_infer,
        reference=lambda x, low, high: torch.clamp(x, low, high),
        traits={"elementwise", "unary"},
        vjp=_clip_vjp,
        # min of max, not tl.clamp: tl.clamp needs low <= high; torch gives high everywhere otherwise.
        lowering=lambda args, low, high: triton_expr.minimum(
            triton_expr.maximum(args[0], triton_expr.literal(low)), triton_expr.literal(high)),
    ),
    binary(
        "zeros_where_masked", _zeros_where_masked_ref,
        "a where the mask b is nonzero, else 0, with broadcasting: Keras's where(mask, a, 0) (a masked "
        "step's output with zero_output_for_mask), which is 0 there even where a is NaN or inf (a * b "
        "would give NaN).", _zeros_where_masked_vjp, binary_expr("tl.where({b} != 0, {a}, 0.0)"),
    ),
    OpDef(
        name="neg",
        doc="-x.",
        num_inputs=(1, 1),
        attrs={},
        infer=same_as_input,
        reference=torch.neg,
        traits={"elementwise", "unary"},
        vjp=_neg_vjp,
        lowering=unary_expr("(-{a})"),
    ),
    OpDef(
        name="rsqrt",
        doc="1 / sqrt(x) (batch normalization's scale, once decomposed).",
        num_inputs=(1, 1),
        attrs={},
        infer=_float_unary_infer,
        reference=torch.rsqrt,
        traits={"elementwise", "unary"},
        vjp=_rsqrt_vjp,
        lowering=unary_expr("tl.rsqrt({a})"),
    ),
    OpDef(
        name="constant",
        doc="A scalar constant (broadcasts against any shape).",
        num_inputs=(0, 0),
        attrs={"value": attr(NUMBER), "dtype": attr(str, "float32", tuple(DTYPES))},
        infer=_constant_infer,
        reference=_constant_ref,
        traits={"constant"},
        vjp=_constant_vjp,
    ),
    OpDef(
        name="cast",
        doc="Convert to another dtype (float to int truncates toward zero).",
        num_inputs=(1, 1),
        attrs={"dtype": attr(str, choices=tuple(DTYPES))},
        infer=_cast_infer,
        reference=lambda x, dtype: x.to(TORCH_DTYPES[dtype]),
        traits={"elementwise", "unary"},
        vjp=_cast_vjp,
        # Compute stays float32; a cast to a narrower float rounds as the stored value would.
        lowering=lambda args, dtype: f"{args[0]}.to({triton_expr.TL_DTYPES[dtype]}).to(tl.float32)",
    ),
]
