"""More math for losses and metrics: log, abs, sign, sqrt, square, power, one_hot."""

import torch

from kcomp.errors import ShapeError
from kcomp.ir.lowering import literal
from kcomp.ir.lowering import unary as unary_expr
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import checked_one_hot, require_float, same_as_input
from kcomp.ir.types import INT_DTYPES, TensorSpec, check_dtype


def _float_infer(inputs):
    require_float(inputs[0], "math op")
    return same_as_input(inputs)


def _vjp_log(b, node, grads):
    (g,) = grads
    return [b.emit1("div", [g, node.inputs[0]])]


def _vjp_abs(b, node, grads):
    (g,) = grads
    return [b.emit1("mul", [g, b.emit1("sign", node.inputs)])]


def _vjp_sign(b, node, grads):
    return [None]  # zero almost everywhere; nothing flows back


def _vjp_sqrt(b, node, grads):
    (g,) = grads
    half = b.emit1("constant", [], value=0.5, dtype=node.outputs[0].dtype)
    return [b.emit1("div", [b.emit1("mul", [g, half]), node.outputs[0]])]


def _vjp_square(b, node, grads):
    (g,) = grads
    two = b.emit1("constant", [], value=2.0, dtype=node.outputs[0].dtype)
    return [b.emit1("mul", [g, b.emit1("mul", [node.inputs[0], two])])]


def _vjp_power(b, node, grads):
    # d x^e / dx = e x^(e - 1): written with power itself, so 0^(e - 1) stays 0 for e > 1 (Keras's
    # focal losses raise 1 - p, which is 0 for a saturated prediction, to gamma = 2).
    (g,) = grads
    exponent = node.attrs["exponent"]
    if exponent == 0:
        return [None]
    lower = b.emit1("power", node.inputs, exponent=exponent - 1.0)
    scale = b.emit1("constant", [], value=float(exponent), dtype=node.outputs[0].dtype)
    return [b.emit1("mul", [g, b.emit1("mul", [lower, scale])])]


def _power(x, exponent):
    return torch.pow(x, exponent)


def _power_lowering(args, exponent):
    """x ** e as torch.pow: small integer exponents by repeated products (exact, and defined for
    negative x); others as exp(e log x), which gives 0 or inf at 0 and NaN below it, as torch does."""
    (a,) = args
    if float(exponent).is_integer() and abs(exponent) <= 8:
        n = int(abs(exponent))
        product = " * ".join([a] * n) if n else f"tl.where({a} == {a}, 1.0, 1.0)"  # x ** 0 is 1, NaN included
        return f"({product})" if exponent >= 0 else f"(1.0 / ({product}))"
    return f"tl.exp({literal(exponent)} * tl.log({a}))"


def unary(name, fn, doc, vjp, lowering):
    return OpDef(name=name, doc=doc, num_inputs=(1, 1), attrs={}, infer=_float_infer, reference=fn,
                 traits={"elementwise", "unary"}, vjp=vjp, lowering=unary_expr(lowering))


def _one_hot_infer(inputs, depth, dtype):
    ids = inputs[0]
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"one_hot takes integer class ids, received dtype {ids.dtype}.")
    if depth <= 0:
        raise ShapeError(f"Received: depth={depth}. Expected a positive number of classes.")
    return [TensorSpec(ids.shape + (depth,), check_dtype(dtype))]


def _one_hot(ids, depth, dtype):
    from kcomp.ir.types import TORCH_DTYPES

    return checked_one_hot(ids, depth, "one_hot", TORCH_DTYPES[dtype])


OPS = [
    unary("log", torch.log, "Natural logarithm.", _vjp_log, "tl.log({a})"),
    unary("abs", torch.abs, "|x|.", _vjp_abs, "tl.abs({a})"),
    # torch's sign: 0 for 0 and for NaN.
    unary("sign", torch.sign, "-1, 0 or 1 by the sign of x.", _vjp_sign, "tl.where({a} > 0.0, 1.0, tl.where({a} < 0.0, -1.0, 0.0))"),
    unary("sqrt", torch.sqrt, "Square root.", _vjp_sqrt, "tl.sqrt({a})"),
    unary("square", torch.square, "x * x.", _vjp_square, "({a} * {a})"),
    OpDef(name="power", doc="x ** exponent, a constant exponent (torch.pow).", num_inputs=(1, 1),
          attrs={"exponent": attr(float)}, infer=lambda inputs, exponent: _float_infer(inputs), reference=_power,
          traits={"elementwise", "unary"}, vjp=_vjp_power, lowering=_power_lowering),
    OpDef(
        name="one_hot",
        doc="Integer class ids (...) -> one-hot rows (..., depth).",
        num_inputs=(1, 1),
        attrs={"depth": attr(int), "dtype": attr(str, "float32")},
        infer=_one_hot_infer,
        reference=_one_hot,
        traits={"gather"},
    ),
]
