"""What a template's generator returns: a kernel module's own part."""

from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratedKernel:
    """A kernel module's own part; the rest (imports, the launch) is the template's.

    hooks: the generated @triton.jit functions (epilogue, prologue, body) and what they need.
    binding: the template's Binding fields, each as Python source (`"operands": "(Operand(...),)"`).
    """

    hooks: str
    binding: dict[str, str]
