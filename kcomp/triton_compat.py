"""What differs between the Triton versions kcomp supports (3.6 to 3.9), in one place.

kcomp is tested with Triton 3.6.0 (what PyTorch 2.10 and 2.11 pin, and the project's GPU
machine has) and 3.9.0. Templates and the compiler are written in the API all of them share;
the differences that cannot be written around live here, each with the versions it concerns,
so no template or pass checks a version itself.

- Triton 3.6's interpreter turns a kernel's integer arguments into one-element arrays and
  gives them `__index__` as `int(array)`, which NumPy 2.4 and newer refuse for arrays that are
  not 0-d ("only 0-dimensional arrays can be converted to Python scalars"): every
  `range(0, R, BLOCK)` over a runtime size failed under the interpreter with the GPU machine's
  NumPy 2.5. Triton 3.7 reads the value with `.squeeze()`; `patch_interpreter` gives 3.6 the same.
- `tl.to_tensor` is missing from Triton 3.6: templates broadcast scalars with block
  arithmetic instead (kernels/random.py), which every version compiles the same.
"""

import re

import triton

def version() -> tuple[int, int]:
    """(major, minor) of the installed Triton ("3.6.0" -> (3, 6); "3.7.0+git..." -> (3, 7))."""
    major, minor = re.match(r"(\d+)\.(\d+)", triton.__version__).groups()
    return int(major), int(minor)


def _index_of_one_element(tensor) -> int:
    return int(tensor.handle.data.squeeze())


_patched = False


def patch_interpreter() -> None:
    """Give Triton 3.6's interpreter the `__index__` of Triton 3.7 (see the module's doc).

    Idempotent, and a no-op on versions that have it. Changes nothing a compiled kernel does:
    the hook is only called when the interpreter runs a kernel.
    """
    global _patched
    if _patched or version() >= (3, 7):
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        # The scope undoes its changes last-in first-out, so this one is undone first.
        scope.set_attr(tensor, "__index__", _index_of_one_element)

    interpreter._patch_lang_tensor = patch_lang_tensor
    _patched = True
