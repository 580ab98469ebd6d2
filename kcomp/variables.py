"""A weight: a named torch tensor owned by a layer (Keras's Variable).

Below the layers and the ops that read it: kcomp.ops turns a Variable into an IR parameter while
tracing and gives it Python's arithmetic operators (ops.give_operators), so `x @ self.w + self.b`
in a layer's call works as on a Keras variable.
"""

import numpy as np
import torch

from kcomp.errors import ArgumentError, format_shape
from kcomp.ir.types import TORCH_DTYPES


class Variable:
    """A weight: a named torch tensor owned by a layer."""

    # How many weights this process has made: a model's kept list of its weights (Model.params)
    # is read again when it moved, since a layer that builds late adds weights without the model's
    # graph changing first.
    made = 0

    def __init__(self, value: torch.Tensor, name: str, path: str, trainable: bool, regularizer=None):
        Variable.made += 1
        self.value = value
        self.name = name  # "kernel"
        self.path = path  # "dense/kernel": unique within a model, the IR parameter name
        self.trainable = trainable
        self.regularizer = regularizer
        self.owner = None  # the layer that made it (its trainable flag freezes this weight too)
        # Keras's autocast: read in a mixed-precision layer's call, a float weight is cast to the
        # layer's compute dtype (kcomp.ops.autocast); the weight itself keeps its dtype.
        self.autocast = True

    @property
    def value(self) -> torch.Tensor:
        return self._value

    @value.setter
    def value(self, tensor: torch.Tensor) -> None:
        # Always contiguous: kernels write weights in place (the optimizer's), into a contiguous
        # buffer. QR's orthogonal factor (a square recurrent kernel's initializer) and a
        # Fortran-ordered array given to assign are column-major, and clone and .to keep that.
        self._value = tensor.contiguous()

    @property
    def effectively_trainable(self) -> bool:
        return self.trainable and (self.owner is None or self.owner.trainable)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def dtype(self) -> str:
        return next(k for k, v in TORCH_DTYPES.items() if v == self.value.dtype)

    def numpy(self) -> np.ndarray:
        return self.value.detach().cpu().numpy().copy()

    def assign(self, new) -> None:
        new = torch.as_tensor(np.asarray(new), dtype=self.value.dtype)
        if tuple(new.shape) != self.shape:
            raise ArgumentError(
                f"weight {self.path} has shape {format_shape(self.shape)}, received a value of shape "
                f"{format_shape(tuple(new.shape))}; pass an array of the weight's shape."
            )
        self.value = new.clone()

    def __repr__(self):
        return f"<Variable {self.path} shape={self.shape} trainable={self.trainable}>"
