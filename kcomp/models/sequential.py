"""Sequential: a plain stack of single-input, single-output layers."""

import numpy as np

from kcomp.errors import ArgumentError, NotCalledError, format_shape
from kcomp.layers.base import Layer
from kcomp.layers.tensors import KerasTensor, flatten
from kcomp.layers.core import InputLayer
from kcomp.models.functional import Model
from kcomp.models.topology import check_weight_paths


class Sequential(Model):
    """`Sequential([Dense(64, activation='relu', input_dim=100), Dense(10)])`, or `.add(...)` one by one.

    The input shape comes from an `Input(shape=...)` / `InputLayer` first, or
    the first layer's `input_shape` / `input_dim` (Keras 2), or a built model
    as the first layer, or `build(input_shape)`, or else the first data (or
    tensor) the model is called on: `compile` may come before that, as in Keras.
    Once it is known, each added layer is checked at once, so a shape error
    names the layer as it is added.
    """

    _default_name = "sequential"

    def __init__(self, layers=None, name=None, trainable=True):
        self._stack: list[Layer] = []
        self._names: set[str] = set()  # the stack's layer names, kept with it (add, pop)
        self._input: KerasTensor | None = None
        super().__init__(name=name, trainable=trainable)
        for layer in layers or []:
            self.add(layer)

    @property
    def layers(self) -> list[Layer]:
        """The stacked layers (an Input is not one of them, as in Keras)."""
        return list(self._stack)

    # Keras 3 defines a Sequential model's input and output only where it was called as a layer.
    input = Layer.input
    output = Layer.output

    def _first_call(self, what: str):
        if not self._calls:
            raise NotCalledError(
                f'Sequential model "{self.name}" has never been called and thus has no defined {what} '
                f"(Keras 3 gives a Sequential model one only where it is called on a tensor). "
                f"Use model.{what}s[0] instead, e.g. Model(model.inputs, model.get_layer(name).output)."
            )
        return self._calls[0]

    def add(self, layer) -> None:
        if isinstance(layer, KerasTensor) and isinstance(getattr(layer.call, "layer", None), InputLayer):
            layer = layer.call.layer
        if isinstance(layer, InputLayer):
            if self._input is not None:
                raise ArgumentError(
                    f'Sequential model "{self.name}" has already been configured to use input shape '
                    f"{format_shape(self._input.call.layer.batch_shape)}. You cannot add a different Input layer to it."
                )
            if self._stack:
                raise ArgumentError(
                    f'Sequential model "{self.name}" already has layers; an Input / InputLayer can only come first. '
                    "Pass it first: Sequential([Input(shape=...), ...])."
                )
            self._input = layer.output
            return
        if not isinstance(layer, Layer):
            raise ArgumentError(f"Only instances of kcomp Layer can be added to a Sequential model. Received: {layer!r}.")
        if layer.name in self._names or (self._input is not None and layer.name == self._input.call.layer.name):
            raise ArgumentError(
                f"All layers added to a Sequential model should have unique names. Name {layer.name!r} is already "
                "the name of a layer in this model. Pass a unique name=... to the layer."
            )
        if self._input is None and not self._stack and layer.batch_input_shape is not None:
            self._input = InputLayer(batch_shape=layer.batch_input_shape, dtype=layer.input_dtype).output
        self._stack.append(layer)
        first = self._stack[0]
        if self._input is None and len(self._stack) > 1 and isinstance(first, Model) and first.built:
            # Keras: a built model as the first layer gives the stack its input shape.
            spec = first.inputs[0]
            self._input = InputLayer(batch_shape=spec.shape, dtype=spec.dtype).output
        if self._input is not None:
            try:
                if self.built and len(self._stack) > 1 and self._stack[-2]._calls and self.outputs[0] is self._stack[-2]._calls[-1].outputs:
                    self._append(layer)  # the stack so far is connected: extend it by one call
                else:
                    self._rebuild()
            except Exception:
                self._stack.pop()  # the model keeps its structure from before the add
                raise
        self._names.add(layer.name)

    def _append(self, layer: Layer) -> None:
        """Connect one more layer to a connected stack: call it on the last output and extend the
        model's calls and layers by that call, so that adding N layers takes time linear in N (a
        rebuild walks the whole stack: 2,000 Dense layers had taken 19 s to add one by one)."""
        paths = self._weight_paths()  # before the call: calling builds the new layer's weights
        out = layer(self.outputs[0])
        self._check_single_output(layer, out)
        if any(w.path in paths for w in layer.weights):
            check_weight_paths(self._layer_order + [layer])  # raises, naming the layers
        paths.update(w.path for w in layer.weights)
        self.outputs = [out]
        self._call_order.append(out.call)
        self._layer_order.append(layer)  # a chain: the new output layer comes last in Keras's order too
        self._forget_plans()
        self._finish_compile()

    def _weight_paths(self) -> set:
        """The paths of the stack's weights, kept as the stack grows by _append."""
        if getattr(self, "_paths_of", None) is not self._layer_order:
            self._paths, self._paths_of = {w.path for w in self.weights}, self._layer_order
        return self._paths

    def _check_single_output(self, layer: Layer, out) -> None:
        if len(flatten(out)) != 1:
            raise ArgumentError(
                f'Layer "{layer.name}" returns {len(flatten(out))} tensors; every layer of a Sequential model '
                "must return one. Use the functional API (Model(inputs, outputs)) for this layer."
            )

    def pop(self) -> Layer:
        """Remove and return the last layer; the model is rebuilt without it."""
        if not self._stack:
            raise ArgumentError(f'Sequential model "{self.name}" has no layers to pop.')
        layer = self._stack.pop()
        self._names.discard(layer.name)
        if self._input is not None and self._stack:
            self._rebuild()
        else:
            self._unbuild()
        return layer

    def _unbuild(self) -> None:
        """No layers left on the input: not built, as Keras's Sequential([Input(...)]) is not."""
        self.inputs, self.outputs, self._call_order, self._layer_order = [], [], [], []
        self._forget_plans()
        self._finish_compile()

    def _rebuild(self) -> None:
        """Chain the stack from the input; each layer is called symbolically once."""
        x = self._input
        for layer in self._stack:
            out = self._call_of(layer, x)
            self._check_single_output(layer, out)
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
        """Keras's build: `model.build((None, 784))` gives the stack its input shape (the batch may be None)."""
        if not self._stack:
            raise ArgumentError(
                f'Sequential model "{self.name}" cannot be built because it has no layers. Call model.add(layer).'
            )
        if input_shape is None:
            if self._input is None:
                raise ArgumentError("Sequential.build needs input_shape, e.g. build((None, 784)).")
            return
        if not isinstance(input_shape, (list, tuple)) or any(
            d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer))) for d in input_shape
        ):
            raise ArgumentError(f"Received: input_shape={input_shape!r}. Expected a tuple such as (None, 784).")
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        if self._input is not None:
            have = self._input.shape
            if len(have) != len(input_shape) or have[1:] != input_shape[1:]:
                raise ArgumentError(
                    f'Sequential model "{self.name}" has already been configured to use input shape '
                    f"{format_shape(have)}. You cannot build it with input_shape {format_shape(input_shape)}."
                )
            return
        self._input = InputLayer(batch_shape=input_shape, dtype=self._stack[0].input_dtype).output
        try:
            self._rebuild()
        except Exception:
            self._input = None
            raise

    def _ensure_built_for(self, x) -> None:
        if self._input is None and self._stack:
            first = x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x
            self.build((None, *tuple(np.shape(first))[1:]))

    def _ensure_built_for_tensors(self, inputs) -> None:
        if self._input is None and self._stack:
            flat = flatten(inputs)
            if len(flat) != 1:
                raise ArgumentError(f'Sequential model "{self.name}" takes one input tensor, received {len(flat)}.')
            self.build(flat[0].shape)
