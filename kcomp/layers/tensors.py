"""Symbolic tensors of the functional API (KerasTensor, LayerCall) and the helpers that turn a
layer's inputs into tensors and shapes: nested structures flattened and rebuilt, arrays to torch,
Keras shapes (None) to IR shapes (symbols). kcomp/layers/base.py's Layer uses them; so do the
models, which build their graphs from the LayerCalls.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from kcomp.errors import KcompError
from kcomp.ir.types import BATCH, TORCH_DTYPES, fresh_symbol
from kcomp.support.arrays import numeric_array
from kcomp.variables import Variable

if TYPE_CHECKING:
    from kcomp.layers.base import Layer


@dataclass(eq=False)
class LayerCall:
    """One application of a layer in a functional model: which tensors went in and out."""

    layer: "Layer"
    inputs: object  # a KerasTensor or a list of them, as the user passed them
    outputs: object  # a KerasTensor or a list of them, as `call` returned them
    kwargs: dict = field(default_factory=dict)


class KerasTensor:
    """A symbolic tensor of the functional API: a shape, a dtype and where it came from.

    `ir_shape` keeps the IR's symbolic dims ("N" for the batch, "?k" for other
    unknown sizes) so that two tensors sharing an unknown size stay compatible;
    `shape` shows them as None, as Keras does.
    """

    def __init__(self, ir_shape, dtype: str, call: LayerCall | None = None, index: int = 0, name: str = "",
                 mask_shape=None):
        self.ir_shape = tuple(ir_shape)
        self.dtype = dtype
        self.call = call
        self.index = index
        self.name = name
        # The IR shape of the mask travelling with this tensor (Keras's _keras_mask), or None.
        self.mask_shape = None if mask_shape is None else tuple(mask_shape)

    @property
    def shape(self) -> tuple:
        return keras_shape(self.ir_shape)

    @property
    def ndim(self) -> int:
        return len(self.ir_shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape} dtype={self.dtype} name={self.name}>"


def flatten(structure) -> list:
    if isinstance(structure, (list, tuple)):
        return [x for item in structure for x in flatten(item)]
    return [structure]


def pack_like(structure, flat: list):
    """Rebuild `structure` (a tensor or a list of tensors) from a flat list."""
    if isinstance(structure, (list, tuple)):
        return [flat[i] for i in range(len(structure))]
    return flat[0]


def to_tensor(x, dtype: str | None = None) -> torch.Tensor:
    """numpy / lists / torch -> torch; float64 becomes float32 (kcomp's default float)."""
    if type(x) is torch.Tensor and dtype is not None and x.dtype is TORCH_DTYPES[dtype]:
        return x  # already what is asked (predict_on_batch's common case: no checks, no .to call)
    if isinstance(x, Variable):
        return x.value
    if not isinstance(x, torch.Tensor):
        array = numeric_array(x, "inputs")  # strings, None, ragged lists, complex: a KcompError naming them
        if any(stride < 0 for stride in array.strides):
            array = array.copy()  # torch takes no negative strides (x[::-1])
        x = torch.as_tensor(array)
    if x.is_complex():
        raise KcompError(f"The inputs are complex numbers ({x.dtype}); kcomp takes real numbers (use .real or abs()).")
    if dtype is not None:
        return x.to(TORCH_DTYPES[dtype])
    if x.dtype == torch.float64:
        return x.to(torch.float32)
    return x


def keras_shape(ir_shape) -> tuple:
    """IR shape -> Keras shape: symbolic dims (the batch, unknown sizes) become None."""
    return tuple(d if isinstance(d, int) else None for d in ir_shape)


def symbolic_batch_shape(shape) -> tuple:
    """Keras shape (None = unknown) -> IR shape: batch "N", other unknowns fresh symbols."""
    return tuple(
        d if isinstance(d, int) else (BATCH if i == 0 else fresh_symbol()) for i, d in enumerate(shape)
    )

