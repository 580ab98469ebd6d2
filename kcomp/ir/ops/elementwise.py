"""Elementwise arithmetic with NumPy broadcasting, constants and casts."""

import torch

from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, broadcast_infer, require_float, same_as_input
from kcomp.ir.types import DTYPES, TORCH_DTYPES, TensorSpec, check_dtype

def _float_broadcast_infer(inputs):
    require_float(inputs[0], "div")
    return broadcast_infer(inputs)


def binary(name: str, fn, doc: str, infer=broadcast_infer) -> OpDef:
    return OpDef(
        name=name,
        doc=doc,
        num_inputs=(2, 2),
        attrs={},
        infer=infer,
        reference=fn,
        traits={"elementwise", "binary"},
    )


def _float_unary_infer(inputs):
    require_float(inputs[0], "rsqrt")
    return same_as_input(inputs)


def _constant_infer(inputs, value, dtype):
    return [TensorSpec((), check_dtype(dtype))]


def _constant_ref(value, dtype):
    return torch.tensor(value, dtype=TORCH_DTYPES[dtype])


def _cast_infer(inputs, dtype):
    return [TensorSpec(inputs[0].shape, check_dtype(dtype))]


OPS = [
    binary("add", torch.add, "a + b with broadcasting."),
    binary("sub", torch.sub, "a - b with broadcasting."),
    binary("mul", torch.mul, "a * b with broadcasting."),
    binary("div", torch.div, "a / b with broadcasting (true division of floating-point inputs).", _float_broadcast_infer),
    binary("maximum", torch.maximum, "Elementwise max(a, b) with broadcasting."),
    binary("minimum", torch.minimum, "Elementwise min(a, b) with broadcasting."),
    OpDef(
        name="neg",
        doc="-x.",
        num_inputs=(1, 1),
        attrs={},
        infer=same_as_input,
        reference=torch.neg,
        traits={"elementwise", "unary"},
    ),
    OpDef(
        name="rsqrt",
        doc="1 / sqrt(x) (batch normalization's scale, once decomposed).",
        num_inputs=(1, 1),
        attrs={},
        infer=_float_unary_infer,
        reference=torch.rsqrt,
        traits={"elementwise", "unary"},
    ),
    OpDef(
        name="constant",
        doc="A scalar constant (broadcasts against any shape).",
        num_inputs=(0, 0),
        attrs={"value": attr(NUMBER), "dtype": attr(str, "float32", tuple(DTYPES))},
        infer=_constant_infer,
        reference=_constant_ref,
        traits={"constant"},
    ),
    OpDef(
        name="cast",
        doc="Convert to another dtype (float to int truncates toward zero).",
        num_inputs=(1, 1),
        attrs={"dtype": attr(str, choices=tuple(DTYPES))},
        infer=_cast_infer,
        reference=lambda x, dtype: x.to(TORCH_DTYPES[dtype]),
        traits={"elementwise", "unary"},
    ),
]
