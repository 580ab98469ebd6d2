"""Whether Triton kernels run on a GPU or under Triton's interpreter (CPU).

Triton decides when it is imported: with TRITON_INTERPRET=1 set before
`import triton`, every @triton.jit function (its own library ones too) is an
interpreted function, and such a process cannot compile for a GPU. So the
choice is per process; this module makes it early and refuses a mix.
"""

import os
import sys

from kcomp.errors import KcompError


def triton_imported() -> bool:
    return "triton" in sys.modules


def interpreting() -> bool:
    """True when kcomp's templates are interpreted functions (importing them if needed)."""
    from triton.runtime.interpreter import InterpretedFunction

    from kcomp.kernels.matmul import matmul_kernel

    return isinstance(matmul_kernel, InterpretedFunction)


def require_interpreter() -> None:
    """Enter interpreter mode, or say why this process cannot."""
    if not triton_imported():
        os.environ["TRITON_INTERPRET"] = "1"
    if not interpreting():
        raise KcompError(
            "backend='triton-interpret' needs Triton in interpreter mode, but Triton was already imported "
            "without TRITON_INTERPRET=1 in this process. Set TRITON_INTERPRET=1 in the environment before "
            "starting Python (or choose this backend before anything imports triton)."
        )


def require_compiler() -> None:
    """Compiling for a GPU (the triton backend, AOT) needs a process not in interpreter mode."""
    if triton_imported() and interpreting():
        raise KcompError(
            "this process runs Triton in interpreter mode (TRITON_INTERPRET=1 was set when Triton was "
            "imported), so it cannot compile kernels for a GPU. Run the GPU or AOT step in a process started "
            "without TRITON_INTERPRET."
        )
