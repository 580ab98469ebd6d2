"""Triton expressions for elementwise IR ops (float32 math on tiles).

Each function takes the argument expressions (variable names) and the node's
attributes and returns one expression. The formulas are the registry
references' formulas, written with triton.language.
"""

import math

from kcomp.ir.ops.activations import SELU_ALPHA, SELU_SCALE


def literal(x: float) -> str:
    """A float literal for generated code (inf and nan have no bare Python literal)."""
    x = float(x)
    return repr(x) if math.isfinite(x) else f'float("{x}")'


def _tanh(a: str) -> str:
    # tanh(a) = 2 * sigmoid(2a) - 1: exact in real arithmetic, and tl.sigmoid is available everywhere.
    return f"(2.0 * tl.sigmoid(2.0 * {a}) - 1.0)"


# Triton's minimum, maximum and clamp drop a NaN by default (the other operand wins); torch's
# keep it. Every clip below keeps it, so weights gone to NaN show in the outputs and the loss.
KEEP_NAN = "propagate_nan=tl.PropagateNan.ALL"


def _maximum(a: str, b: str) -> str:
    return f"tl.maximum({a}, {b}, {KEEP_NAN})"


def _clip(a: str, low: str, high: str) -> str:
    return f"tl.clamp({a}, {low}, {high}, {KEEP_NAN})"


def _softplus(a: str) -> str:
    return f"({_maximum(a, '0.0')} + tl.log(1.0 + tl.exp(-tl.abs({a}))))"


def _hard_sigmoid(a: str) -> str:
    return _clip(f"{a} / 6.0 + 0.5", "0.0", "1.0")


def _relu(a, negative_slope, max_value, threshold):
    # Keras's order (see the relu op): keep above threshold, clip, subtract the negative part.
    # Above a threshold, x * (x > threshold) as Keras and the reference: NaN and -inf give NaN.
    y = f"({a} * tl.where({a} > {literal(threshold)}, 1.0, 0.0))" if threshold != 0 else _maximum(a, "0.0")
    if max_value is not None:
        y = _clip(y, "0.0", literal(max_value))
    if negative_slope != 0:
        y = f"({y} - {literal(negative_slope)} * {_maximum(f'{literal(threshold)} - {a}', '0.0')})"
    return y


def _gelu(a, approximate):
    if approximate:
        inner = f"0.7978845608028654 * ({a} + 0.044715 * {a} * {a} * {a})"
        return f"(0.5 * {a} * (1.0 + {_tanh('(' + inner + ')')}))"
    return f"(0.5 * {a} * (1.0 + tl.math.erf({a} * 0.7071067811865476)))"


def _power(a, exponent):
    """x ** e as torch.pow: small integer exponents by repeated products (exact, and defined for
    negative x); others as exp(e log x), which gives 0 or inf at 0 and NaN below it, as torch does."""
    if float(exponent).is_integer() and abs(exponent) <= 8:
        n = int(abs(exponent))
        product = " * ".join([a] * n) if n else f"tl.where({a} == {a}, 1.0, 1.0)"  # x ** 0 is 1, NaN included
        return f"({product})" if exponent >= 0 else f"(1.0 / ({product}))"
    return f"tl.exp({literal(exponent)} * tl.log({a}))"


UNARY = {
    "neg": lambda a: f"(-{a})",
    "rsqrt": lambda a: f"tl.rsqrt({a})",
    "relu": _relu,
    "sigmoid": lambda a: f"tl.sigmoid({a})",
    "tanh": _tanh,
    "gelu": _gelu,
    "elu": lambda a, alpha: f"tl.where({a} > 0.0, {a}, {literal(alpha)} * (tl.exp({a}) - 1.0))",
    "selu": lambda a: f"({literal(SELU_SCALE)} * tl.where({a} > 0.0, {a}, {literal(SELU_ALPHA)} * (tl.exp({a}) - 1.0)))",
    "softplus": _softplus,
    "softsign": lambda a: f"({a} / (1.0 + tl.abs({a})))",
    "leaky_relu": lambda a, negative_slope: f"tl.where({a} >= 0.0, {a}, {literal(negative_slope)} * {a})",
    "silu": lambda a: f"({a} * tl.sigmoid({a}))",
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda a: f"({a} * {_hard_sigmoid(a)})",
    "mish": lambda a: f"({a} * {_tanh(_softplus(a))})",
    "exponential": lambda a: f"tl.exp({a})",
    "linear": lambda a: a,
    "erf": lambda a: f"tl.math.erf({a})",
    # losses' math (kcomp/ir/ops/math.py)
    "square": lambda a: f"({a} * {a})",
    "abs": lambda a: f"tl.abs({a})",
    "sqrt": lambda a: f"tl.sqrt({a})",
    "log": lambda a: f"tl.log({a})",
    "power": lambda a, exponent: _power(a, exponent),
    "sign": lambda a: f"tl.where({a} > 0.0, 1.0, tl.where({a} < 0.0, -1.0, 0.0))",  # torch's: 0 for 0 and NaN
}

BINARY = {
    "add": "({a} + {b})",
    "bias_add": "({a} + {b})",
    "sub": "({a} - {b})",
    "mul": "({a} * {b})",
    "div": "({a} / {b})",
    "maximum": "tl.maximum({a}, {b}, " + KEEP_NAN + ")",
    "minimum": "tl.minimum({a}, {b}, " + KEEP_NAN + ")",
    "greater": "tl.where({a} > {b}, 1.0, 0.0)",
    "equal": "tl.where({a} == {b}, 1.0, 0.0)",
    "broadcast_like": "({a} + tl.zeros_like({b}))",  # b gives only the shape
}

# Generated code that draws dropout's mask calls kcomp.kernels.random under this name; the
# function must define `offs`, the flat row-major index of each element of the op's output.
RNG_IMPORT = "from kcomp.kernels import random as rng"


def draws_random(op: str, attrs: dict) -> bool:
    """Whether the node's expression draws random numbers (and so needs `offs` and RNG_IMPORT)."""
    return op == "dropout" and attrs["training"] and attrs["rate"] != 0.0


def _dropout(args: list[str], rate, seed, training) -> str:
    # Inputs (x, step): the step is the training step's scalar; without one (eager, Monte Carlo
    # dropout in predict) the reference draws at step 0 too. Seed and rate are compile-time
    # constants; the seed is taken as 64-bit two's complement, as kcomp.random.seed_key does.
    if not draws_random("dropout", dict(rate=rate, training=training)):
        return args[0]
    step = args[1] if len(args) > 1 else "0.0"
    seed = seed & (2**64 - 1)
    scale = literal(1.0 / (1.0 - rate))
    return f"rng.dropout({args[0]}, offs, {step}, SEED={seed}, RATE={literal(rate)}, SCALE={scale})"


TL_DTYPES = {"float32": "tl.float32", "float16": "tl.float16", "bfloat16": "tl.bfloat16", "float64": "tl.float64"}


def expression(op: str, args: list[str], attrs: dict) -> str:
    if op in BINARY:
        a, b = args
        return BINARY[op].format(a=a, b=b)
    if op == "cast":
        # Compute stays float32; a cast to a narrower float rounds as the stored value would.
        return f"{args[0]}.to({TL_DTYPES[attrs['dtype']]}).to(tl.float32)"
    if op in UNARY:
        return UNARY[op](args[0], **attrs)
    if op == "dropout":
        return _dropout(args, **attrs)
    raise KeyError(f"no Triton expression for op {op!r}")


def supported(op: str) -> bool:
    return op in BINARY or op in UNARY or op in ("cast", "dropout")
