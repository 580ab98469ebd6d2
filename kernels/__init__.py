"""Triton kernel templates ship here (as kcomp.kernels)."""

from kcomp.triton_compat import patch_interpreter

# Every template launch imports this package first, so the interpreter is fixed before it runs one.
patch_interpreter()
