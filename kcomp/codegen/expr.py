"""Triton expressions for elementwise IR ops: each op's own lowering (OpDef.lowering, beside its
torch reference; helpers in kcomp/ir/lowering.py), looked up for the generated kernels."""

from kcomp.ir.ops.norm import dropout_draws
from kcomp.ir.registry import OPS

# Generated code that draws random numbers (dropout's mask) calls kcomp.kernels.random under this name; the
# function must define `offs`, the flat row-major index of each element of the op's output.
RNG_IMPORT = "from kcomp.kernels import random as rng"


def draws_random(op: str, attrs: dict) -> bool:
    """Whether the node's expression draws random numbers (and so needs `offs` and RNG_IMPORT)."""
    if op == "dropout":
        return dropout_draws(attrs["rate"], attrs["training"])
    return "random" in OPS[op].traits  # the other random elementwise ops always draw (random_brightness)


def expression(op: str, args: list[str], attrs: dict) -> str:
    lowering = OPS[op].lowering if op in OPS else None
    if lowering is None:
        raise KeyError(f"no Triton expression for op {op!r}")
    return lowering(args, **attrs)

