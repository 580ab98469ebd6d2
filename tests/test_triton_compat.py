"""kcomp.triton_compat: what differs between the supported Triton versions (3.6 to 3.9).

The whole kernel suite under Triton 3.6 (CI's second environment) is the real check; these pin
down the pieces on whichever Triton is installed.
"""

import numpy as np
import pytest
import triton
from triton.runtime import interpreter

from kcomp import triton_compat


@pytest.mark.parametrize("text, want", [("3.6.0", (3, 6)), ("3.9.0", (3, 9)), ("3.7.0+git1a2b3c", (3, 7)), ("3.10.1", (3, 10))])
def test_version_reads_major_and_minor(monkeypatch, text, want):
    monkeypatch.setattr(triton, "__version__", text)
    assert triton_compat.version() == want


class _Handle:
    def __init__(self, data):
        self.data = data


class _Tensor:
    """Stands in for triton.language.tensor as Triton 3.6's interpreter sees a scalar argument."""

    def __init__(self, value):
        self.handle = _Handle(np.array([value], dtype=np.int32))


def _triton_36_patch_lang_tensor(tensor, scope):
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))  # what 3.6 does


def test_triton_36_interpreter_reads_one_element_sizes_as_3_7_does(monkeypatch):
    """Under 3.6 with NumPy >= 2.4, range(0, R, BLOCK) over a kernel's size argument raised
    'only 0-dimensional arrays can be converted to Python scalars'."""
    monkeypatch.setattr(triton_compat, "version", lambda: (3, 6))
    monkeypatch.setattr(triton_compat, "_patched", False)
    monkeypatch.setattr(interpreter, "_patch_lang_tensor", _triton_36_patch_lang_tensor)
    triton_compat.patch_interpreter()
    scope = interpreter._LangPatchScope()
    interpreter._patch_lang_tensor(_Tensor, scope)
    assert list(range(0, _Tensor(37), 16)) == [0, 16, 32]
    scope.restore()
    assert not hasattr(_Tensor, "__index__")  # the scope undoes both patches


def test_newer_interpreters_are_left_as_they_are(monkeypatch):
    monkeypatch.setattr(triton_compat, "version", lambda: (3, 7))
    monkeypatch.setattr(triton_compat, "_patched", False)
    original = interpreter._patch_lang_tensor
    triton_compat.patch_interpreter()
    assert interpreter._patch_lang_tensor is original
