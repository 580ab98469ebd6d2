"""Bidirectional: a recurrent layer run over the sequence forwards and backwards, outputs merged.

As Keras 3 builds it: the forward layer is a fresh copy of the given layer (named
forward_<name>), the backward one a copy reading the sequence last step first
(go_backwards=True, named backward_<name>) unless one is given. With
return_sequences the backward outputs are flipped back into time order before they
are merged (concat, sum, ave, mul, or None for the two as a list); with
return_state the states follow, the forward layer's then the backward layer's. Both
run on the same recurrent ops (and kernels) as the layers themselves; the weights
are the forward layer's, then the backward layer's. A mask goes to both layers (each reads it in
its own order); with return_sequences the merged output carries it on (both outputs with
merge_mode=None), as Keras's compute_mask gives it.
"""

from kcomp import ops
from kcomp.errors import ArgumentError
from kcomp.layers.base import Layer
from kcomp.layers.recurrent import _RNN

MERGE_MODES = ("concat", "sum", "ave", "mul", None)


def _recurrent_layer(value, what: str) -> _RNN:
    if isinstance(value, dict):  # a serialized layer (from a config or a Keras file)
        from kcomp.saving.serialization import layer_from_keras

        value = layer_from_keras(value)
    if not isinstance(value, _RNN):
        raise ArgumentError(f"Bidirectional's {what} must be a recurrent layer (LSTM, GRU, SimpleRNN); received {value!r}.")
    return value


def _copy(layer: _RNN, name: str, **changes) -> _RNN:
    return type(layer).from_config({**layer.get_config(), "name": name, **changes})


class Bidirectional(Layer):
    supports_masking = True

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if merge_mode not in MERGE_MODES:
            raise ArgumentError(f"Received: merge_mode={merge_mode!r}. Expected one of {list(MERGE_MODES)}.")
        if weights is not None:
            raise ArgumentError("Received: weights=... . Set the weights after building (set_weights), as Keras 3 does.")
        layer = _recurrent_layer(layer, "layer")
        super().__init__(**kwargs)
        self.forward_layer = _copy(layer, f"forward_{layer.name.removeprefix('forward_')}")
        if backward_layer is None:
            self.backward_layer = _copy(layer, f"backward_{layer.name.removeprefix('backward_')}", go_backwards=True)
        else:
            self.backward_layer = _recurrent_layer(backward_layer, "backward_layer")
        forward, backward = self.forward_layer, self.backward_layer
        for inner in (forward, backward):  # as Keras sets it on both
            inner.zero_output_for_mask = inner.return_sequences
        if forward.go_backwards == backward.go_backwards:
            raise ArgumentError(
                f"Bidirectional's forward and backward layers both have go_backwards={forward.go_backwards}; "
                "the backward layer must read the sequence the other way."
            )
        for attribute in ("return_sequences", "return_state"):
            if getattr(forward, attribute) != getattr(backward, attribute):
                raise ArgumentError(
                    f"Bidirectional's forward and backward layers differ in {attribute} "
                    f"({getattr(forward, attribute)} and {getattr(backward, attribute)}); give them the same."
                )
        self.merge_mode = merge_mode
        self.return_sequences = forward.return_sequences
        self.return_state = forward.return_state

    def call(self, inputs, training=False, mask=None):
        y = self.forward_layer(inputs, training=training, mask=mask)
        y_rev = self.backward_layer(inputs, training=training, mask=mask)
        states = []
        if self.return_state:
            (y, *forward_states), (y_rev, *backward_states) = y, y_rev
            states = forward_states + backward_states
        if self.return_sequences:
            y_rev = ops.emit("flip", y_rev, axis=1)  # read last step first: back into time order
        if self.merge_mode == "concat":
            output = [ops.emit("concat", y, y_rev, axis=-1)]
        elif self.merge_mode == "sum":
            output = [ops.add(y, y_rev)]
        elif self.merge_mode == "ave":
            output = [ops.multiply(ops.add(y, y_rev), 0.5)]
        elif self.merge_mode == "mul":
            output = [ops.multiply(y, y_rev)]
        else:
            output = [y, y_rev]
        if not states and len(output) == 1:
            return output[0]
        return output + states

    def compute_mask(self, inputs, previous_mask):
        """Keras's: the sequence's mask on the merged output(s) with return_sequences, else none; none on states."""
        mask = previous_mask[0] if isinstance(previous_mask, (list, tuple)) else previous_mask
        if not self.return_sequences:
            return None
        return [mask, mask] if self.merge_mode is None else mask

    def get_config(self):
        from kcomp.saving.serialization import layer_to_keras

        return {
            **super().get_config(),
            "merge_mode": self.merge_mode,
            "layer": layer_to_keras(self.forward_layer),
            "backward_layer": layer_to_keras(self.backward_layer),
        }
