"""TimeDistributed: Keras's wrapper that applies one layer to every step of a sequence.

The steps are folded into the batch: (batch, steps, ...) is viewed as (batch * steps, ...) (a
reshape: the batch symbol "N" becomes "N*steps", kcomp/ir/types.py), the wrapped layer runs once
on that, and its result is viewed as (batch, steps, ...) again. So TimeDistributed(Dense) is one
matmul kernel and TimeDistributed(Conv2D) one conv2d kernel over every step at once, with the
layer's own fusion (bias, activation, a pool). The weights are the wrapped layer's, in its order.

Keras calls the layer on each step in turn; the results are the same for every layer whose call
treats the samples of a batch apart. BatchNormalization in training does not (Keras normalizes
each step by that step's batch statistics and moves its averages once a step): that is refused.

A mask passes through, as Keras's (the output carries the input's). A mask with more than the
(batch, steps) axes (ids of shape (batch, steps, words) through Embedding(mask_zero=True)) is
folded as the inputs are and goes to the wrapped layer, which reads each step's (batch, words).
"""

from kcomp import ops
from kcomp.errors import ArgumentError, KcompError, ShapeError, format_shape
from kcomp.ir.types import fold_dim, is_static
from kcomp.layers.base import Layer
from kcomp.layers.core import batch_dim
from kcomp.layers.normalization import BatchNormalization


def _layers_within(layer) -> list:
    """The layer, the layers it holds and, for a model, its layers: all the way down."""
    found, todo = [], [layer]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += current._held_layers() + list(getattr(current, "layers", None) or [])
    return found


class TimeDistributed(Layer):
    """`TimeDistributed(layer)`: `layer` applied to each step of (batch, steps, ...) inputs."""

    supports_masking = True

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):  # Keras's serialized layer (a config, a file): read through the allow-list
            from kcomp.saving.serialization import layer_from_keras

            layer = layer_from_keras(layer)
        if not isinstance(layer, Layer):
            raise ArgumentError(
                f"Received: layer={layer!r}. TimeDistributed wraps a layer instance, e.g. TimeDistributed(Dense(8))."
            )
        self.layer = layer

    @property
    def input_dtype(self):  # ids for a wrapped Embedding
        return self.layer.input_dtype

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ShapeError(
                f'Layer "{self.name}" (TimeDistributed) expects inputs of shape (batch, steps, ...) with at least '
                f"3 dimensions, received input shape {format_shape(input_shape)}."
            )
        self.layer._build_for((input_shape[0], *input_shape[2:]))  # Keras: built for one step's shape

    def call(self, inputs, training=False, mask=None):
        steps = inputs.shape[1]
        if not is_static(steps):
            raise ShapeError(
                f'Layer "{self.name}" (TimeDistributed) needs a known number of steps (it folds them into the '
                f"batch), received input shape {format_shape(inputs.shape)}."
            )
        if training:
            self._refuse_batch_statistics()
        batch = batch_dim(inputs)
        folded = ops.reshape(inputs, (fold_dim(batch, steps), *inputs.shape[2:]))
        step_mask = self._step_mask(mask, fold_dim(batch, steps))
        outputs = self.layer(folded, training=training, **({} if step_mask is None else {"mask": step_mask}))
        if isinstance(outputs, (list, tuple)):
            raise KcompError(
                f'Layer "{self.name}" (TimeDistributed): the wrapped layer "{self.layer.name}" returns '
                f"{len(outputs)} tensors; TimeDistributed takes a layer with one output."
            )
        return ops.reshape(outputs, (batch, steps, *outputs.shape[1:]))

    def _step_mask(self, mask, folded_batch):
        """What the wrapped layer reads of the mask: none for a (batch, steps) mask (Keras gives it each
        step's (batch,) column, which only a layer that takes no mask ignores), else the mask folded."""
        if mask is None or not (self.layer._call_takes_mask or self.layer.supports_masking):
            return None
        if len(mask.shape) < 3:
            if not self.layer._call_takes_mask:
                return None
            raise KcompError(
                f'Layer "{self.name}" (TimeDistributed) got a (batch, steps) mask and wraps "{self.layer.name}", '
                "which reads masks: Keras would give it one mask value per sample at each step. Put the masked "
                "layer outside the TimeDistributed."
            )
        return ops.reshape(mask, (folded_batch, *mask.shape[2:]))

    def _refuse_batch_statistics(self) -> None:
        for layer in _layers_within(self.layer):
            if isinstance(layer, BatchNormalization) and layer.trainable:
                raise KcompError(
                    f'Layer "{self.name}" (TimeDistributed) wraps the BatchNormalization "{layer.name}", which in '
                    "training would normalize each step by that step's batch statistics in Keras; kcomp folds the "
                    "steps into one batch, so it would compute something else. Freeze it (trainable=False: it then "
                    "runs on its moving statistics) or put it outside the TimeDistributed."
                )

    def get_config(self):
        from kcomp.saving.serialization import layer_to_keras

        return {**super().get_config(), "layer": layer_to_keras(self.layer)}
