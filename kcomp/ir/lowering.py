"""Building blocks of an elementwise op's lowering: its Triton expression.

An op's `lowering` (on its OpDef, beside its torch reference) takes the argument expressions
(names of float32 tiles in the generated kernel) and the node's attributes, and returns one
Triton expression computing the op on them, written with triton.language as `tl`. The
formulas are the references' formulas; codegen/expr.py only looks them up.
"""

import math


def literal(x: float) -> str:
    """A float literal for generated code (inf and nan have no bare Python literal)."""
    x = float(x)
    return repr(x) if math.isfinite(x) else f'float("{x}")'


# Triton's minimum, maximum and clamp drop a NaN by default (the other operand wins); torch's
# keep it. Every clip below keeps it, so weights gone to NaN show in the outputs and the loss.
KEEP_NAN = "propagate_nan=tl.PropagateNan.ALL"


def maximum(a: str, b: str) -> str:
    return f"tl.maximum({a}, {b}, {KEEP_NAN})"


def minimum(a: str, b: str) -> str:
    return f"tl.minimum({a}, {b}, {KEEP_NAN})"


def clip(a: str, low: str, high: str) -> str:
    return f"tl.clamp({a}, {low}, {high}, {KEEP_NAN})"


def tanh(a: str) -> str:
    # tanh(a) = 2 * sigmoid(2a) - 1: exact in real arithmetic, and tl.sigmoid is available everywhere.
    return f"(2.0 * tl.sigmoid(2.0 * {a}) - 1.0)"


def softplus(a: str) -> str:
    return f"({maximum(a, '0.0')} + tl.log(1.0 + tl.exp(-tl.abs({a}))))"


def hard_sigmoid(a: str) -> str:
    return f"({clip(f'{a} + 3.0', '0.0', '6.0')} / 6.0)"  # torch's hardsigmoid: relu6(x + 3) / 6


def unary(template: str):
    """A lowering from a template over `{a}`: unary("tl.exp({a})")."""
    return lambda args, **attrs: template.format(a=args[0])


def binary(template: str):
    """A lowering from a template over `{a}` and `{b}`: binary("({a} + {b})")."""
    return lambda args, **attrs: template.format(a=args[0], b=args[1])


TL_DTYPES = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float64": "tl.float64"}
