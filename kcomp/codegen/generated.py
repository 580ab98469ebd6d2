"""What a template's generator returns: the pieces of one kernel module."""

from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratedKernel:
    """A kernel module's own part; the rest (imports, the launch) is the template's.

    hooks: the generated @triton.jit functions (epilogue, prologue, body) and what they need.
    binding: the template's Binding fields, each as Python source (`"operands": "(Operand(...),)"`).
    """

    hooks: str
    binding: dict[str, str]


@dataclass(frozen=True)
class Generated:
    imports: str  # from kcomp.kernels.<template> import ...
    expression: str  # the generated @triton.jit function (epilogue or body)
    launch: str  # the body of `launch(in0, in1, ..., out=None, config=None, precision="tf32")`


def operand_args(operands, tile: bool, count: int, unused: str = "out") -> str:
    """E0..E3 / S0..S3 (tile) or X0..X7 (flat) arguments; unused slots get the tensor `unused` and 0."""
    if tile:
        ptrs = [f"in{o.input_index}" for o in operands] + [unused] * (count - len(operands))
        strides = [f"in{o.input_index}.shape[-1]" if o.kind == "full" else "0" for o in operands]
        strides += ["0"] * (count - len(operands))
        return ", ".join(ptrs) + ", " + ", ".join(strides)
    return ", ".join([f"in{o.input_index}" for o in operands] + [unused] * (count - len(operands)))


def contiguous_operands(operands) -> str:
    """Lines making every tensor operand contiguous (the generated loads assume it)."""
    return "".join(f"    in{o.input_index} = in{o.input_index}.contiguous()\n" for o in operands)
