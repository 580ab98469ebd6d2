"""Keras's masks: which steps of a sequence are data and which are padding.

A mask is a tensor of 0/1 floats, (batch, time) for a sequence (1: a step to read), that
travels with a tensor as Keras attaches `_keras_mask` to one: while a model is traced, in its
graph builder's `masks` (value id -> mask value); on data (a layer called eagerly), as the
tensor's `_keras_mask` attribute. Embedding(mask_zero=True) and Masking make one; a layer that
supports masking gives its outputs one from `compute_mask` (kcomp/layers/base.py); any other
value an op makes has none, as in Keras. Where an op needs it (a recurrent layer), the mask is
one more input of the op. Floats rather than bools, as the IR's other masks, so that what
computes and reads them fuses as arithmetic.
"""

import torch

from kcomp import ops
from kcomp.ir.graph import Value


def mask_of(x):
    """The mask travelling with `x`, or None."""
    if isinstance(x, Value):
        builder = ops.current_builder()
        return None if builder is None else builder.masks.get(x.id)
    return getattr(x, "_keras_mask", None)


def attach(x, mask) -> None:
    """Let `mask` travel with `x` (nothing when mask is None)."""
    if mask is None:
        return
    if isinstance(x, Value):
        ops.current_builder().masks[x.id] = mask
    else:
        x._keras_mask = mask


def _scalar_like(x, value):
    """`value` as a scalar of x's dtype (broadcasts against x)."""
    if isinstance(x, Value):
        return ops.current_builder().emit1("constant", [], value=value, dtype=x.dtype)
    return torch.tensor(value, dtype=x.dtype)


def not_equal(x, value):
    """1.0 where x != value, else 0.0 (float32; NaN differs from everything, as in Keras)."""
    same = ops.emit("equal", x, _scalar_like(x, value))
    if ops.dtype(same) != "float32":
        same = ops.cast(same, "float32")
    return ops.subtract(1.0, same)


def any_of(mask, axis: int = -1):
    """Keras's ops.any over `axis` of a 0/1 mask."""
    return ops.max(mask, axis=axis)


def logical_or(a, b):
    return ops.maximum(a, b)


def as_mask(value) -> torch.Tensor:
    """A mask given as data (bools or numbers, Keras's call argument mask=...) as 0/1 float32."""
    tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
    return (tensor != 0).to(torch.float32)


def select(mask, a, b):
    """Keras's where(mask, a, b) for a 0/1 mask (broadcast against a and b), as arithmetic that
    fuses: a * m + b * (1 - m), which is exactly a or b wherever both are finite."""
    return ops.add(ops.multiply(a, mask), ops.multiply(b, ops.subtract(1.0, mask)))


def per_feature(mask, x):
    """A (batch, time) mask shaped to multiply x (batch, time, features): a trailing axis of 1, x's dtype."""
    mask = ops.reshape(mask, (*mask.shape, 1))
    return mask if ops.dtype(mask) == ops.dtype(x) else ops.cast(mask, ops.dtype(x))
