"""Sequential: a plain stack of single-input, single-output layers."""

import numpy as np

from kcomp.errors import ArgumentError
from kcomp.layers.base import KerasTensor, Layer, flatten
from kcomp.layers.core import InputLayer
from kcomp.models.functional import Model


class Sequential(Model):
    """`Sequential([Dense(64, activation='relu', input_dim=100), Dense(10)])`, or `.add(...)` one by one.

    The input shape comes from an `Input(shape=...)` / `InputLayer` first, or
    the first layer's `input_shape` / `input_dim` (Keras 2), or the first data
    passed to `predict` / `build`. Once it is known, each added layer is
    checked at once, so a shape error names the layer as it is added.
    """

    _default_name = "sequential"

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self._stack: list[Layer] = []
        self._input: KerasTensor | None = None
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        return list(self._stack)

    def add(self, layer) -> None:
        if isinstance(layer, KerasTensor) and isinstance(getattr(layer.call, "layer", None), InputLayer):
            layer = layer.call.layer
        if isinstance(layer, InputLayer):
            if self._stack or self._input is not None:
                raise ArgumentError("An Input / InputLayer can only come first in a Sequential model.")
            self._input = layer.output
            return
        if not isinstance(layer, Layer):
            raise ArgumentError(f"Sequential.add takes a layer, received {layer!r}.")
        if self._input is None and not self._stack and layer.batch_input_shape is not None:
            self._input = InputLayer(batch_shape=layer.batch_input_shape, dtype=layer.input_dtype).output
        self._stack.append(layer)
        if self._input is not None:
            try:
                self._rebuild()
            except Exception:
                self._stack.pop()
                raise

    def pop(self) -> Layer:
        layer = self._stack.pop()
        if self._input is not None:
            self._rebuild()
        return layer

    def _rebuild(self) -> None:
        """Chain the stack from the input; each layer is called symbolically once."""
        x = self._input
        for layer in self._stack:
            out = self._call_of(layer, x)
            if len(flatten(out)) != 1:
                raise ArgumentError(
                    f'Layer "{layer.name}" returns {len(flatten(out))} tensors; every layer of a Sequential model '
                    "must return one. Use the functional API (Model(inputs, outputs)) for this layer."
                )
            x = out
        self._connect([self._input], [x])

    def _call_of(self, layer: Layer, x: KerasTensor):
        # Reuse the layer's existing call on this exact tensor, so rebuilding
        # after each add does not record duplicate calls.
        for call in layer._calls:
            if call.inputs is x:
                return call.outputs
        return layer(x)

    def build(self, input_shape=None) -> None:
        if self._input is None:
            if input_shape is None:
                raise ArgumentError("Sequential.build needs input_shape, e.g. build((None, 784)).")
            dtype = self._stack[0].input_dtype if self._stack else "float32"
            self._input = InputLayer(batch_shape=(None, *tuple(input_shape)[1:]), dtype=dtype).output
            self._rebuild()

    def _ensure_built_for(self, x) -> None:
        if self._input is None and self._stack:
            self.build((None, *np.shape(x)[1:]))
