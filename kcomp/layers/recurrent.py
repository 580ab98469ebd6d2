"""Recurrent layers (LSTM, GRU, SimpleRNN), each one whole-sequence op.

Weights follow Keras: kernel (features, gates * units), recurrent_kernel
(units, gates * units), bias (gates * units), or (2, 3 * units) for a GRU with
reset_after=True. In training, `dropout` drops input features as Keras's cells do: one
mask per sequence (batch, features), the same at every time step, drawn anew each step.
With `recurrent_dropout` (in training) each gate draws its own input mask and its own mask of
h_{t-1} (batch, units), once per sequence, as Keras's cells do then; they go to the op as two
more inputs, and such an op runs the general path (the scan kernels take no per-gate masks).

A Keras mask travelling with the input (Embedding(mask_zero=True), Masking) goes to the op as
one more input: a masked step keeps the previous states and output (zeros with
zero_output_for_mask). The outputs carry the mask on with return_sequences, else none.
"""

import torch

from kcomp import activations, initializers, ops, regularizers, session
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.ops.recurrent import CELL_ACTIVATIONS
from kcomp.layers import args
from kcomp.layers.base import Layer
from kcomp.layers.core import dropout_of_ones, first_step, sequence_dropout_mask
from kcomp.random import derived_seed


def _cell_activation(name, value):
    fn = activations.get(value)
    label = activations.serialize(fn) if fn in activations.ACTIVATIONS.values() else None
    if label not in CELL_ACTIVATIONS:
        raise ArgumentError(f"Received: {name}={value!r}. A recurrent cell takes one of {list(CELL_ACTIVATIONS)}.")
    return label


class _UnitForgetBias(initializers.Initializer):
    """Keras's unit_forget_bias: the base initializer, with ones for the forget gate."""

    def __init__(self, base, units):
        self.base, self.units = base, units

    def __call__(self, shape, dtype=torch.float32):
        u = self.units
        return torch.cat([self.base((u,), dtype), torch.ones(u, dtype=dtype), self.base((2 * u,), dtype)])


class _RNN(Layer):
    op = ""  # the registry op
    gates = 1
    num_states = 1
    supports_masking = True

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = args.positive_int("units", units)
        self.activation = _cell_activation("activation", activation)
        self.recurrent_activation = _cell_activation("recurrent_activation", recurrent_activation)
        self.use_bias = args.boolean("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        for name, value in (("kernel_constraint", kernel_constraint), ("recurrent_constraint", recurrent_constraint), ("bias_constraint", bias_constraint)):
            args.no_constraint(name, value)
        self.dropout = args.rate("dropout", dropout)
        self.recurrent_dropout = args.rate("recurrent_dropout", recurrent_dropout)
        self.return_sequences = args.boolean("return_sequences", return_sequences)
        self.return_state = args.boolean("return_state", return_state)
        self.go_backwards = args.boolean("go_backwards", go_backwards)
        self.unroll = args.boolean("unroll", unroll)
        self.seed = seed
        # Keras: a masked step outputs zeros instead of the last output (without a mask: nothing changes).
        self.zero_output_for_mask = args.boolean("zero_output_for_mask", zero_output_for_mask)
        if stateful:
            raise ArgumentError("Received: stateful=True. kcomp's recurrent layers start each batch from zero states; pass stateful=False.")
        self.stateful = False

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def _op_attrs(self):
        return {}

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ShapeError(
                f'Layer "{self.name}" ({type(self).__name__}) expects sequences of shape (batch, timesteps, features) '
                f"with known features, received input shape {format_shape(input_shape)}."
            )
        width = self.gates * self.units
        self.kernel = self.add_weight(shape=(input_shape[-1], width), initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width), initializer=self.recurrent_initializer, regularizer=self.recurrent_regularizer,
            name="recurrent_kernel",
        )
        if self.use_bias:
            self.bias = self.add_weight(shape=self._bias_shape(), initializer=self._bias_initializer(), regularizer=self.bias_regularizer, name="bias")
        # The dropout mask's seed, drawn in build order as Dropout's is (kcomp/layers/core.py).
        self._op_seed = self.seed if self.seed is not None else session.draw_seed()

    def call(self, inputs, training=False, mask=None):
        training = args.boolean("training", training)
        weights = [self.kernel, self.recurrent_kernel] + ([self.bias] if self.use_bias else [])
        masked = {}
        if training and self.recurrent_dropout:
            weights += self._gate_dropout_masks(inputs)
            masked["dropout_masks"] = True
        elif training and self.dropout:
            inputs = ops.multiply(inputs, sequence_dropout_mask(inputs, self.dropout, self._op_seed))
        if mask is not None:
            weights.append(self._step_mask(inputs, mask))
            masked.update(masked=True, zero_output_for_mask=self.zero_output_for_mask)  # with dropout_masks, if drawn
        outputs = ops.emit(
            self.op, inputs, *weights,
            activation=self.activation, recurrent_activation=self.recurrent_activation, use_bias=self.use_bias,
            return_sequences=self.return_sequences, go_backwards=self.go_backwards, **self._op_attrs(), **masked,
        )
        return list(outputs) if self.return_state else outputs[0]

    def _gate_dropout_masks(self, inputs):
        """Keras's cells with recurrent_dropout (its implementation 1): each gate draws its own input
        mask (batch, features) and recurrent mask (batch, units), once per sequence, the same at every
        step; as the op takes them, (batch, gates, features) and (batch, gates, units). Without
        `dropout` the input masks are ones."""
        step = first_step(inputs)
        batch = tuple(inputs.shape)[0]  # the IR's batch dimension while tracing, a size on data
        input_like = ops.concatenate([step] * self.gates, axis=-1)  # (batch, 1, gates * features)
        recurrent_like = ops.matmul(step, self.kernel)  # (batch, 1, gates * units): only its shape is read
        masks = []
        for like, rate, seed in ((input_like, self.dropout, self._op_seed),
                                 (recurrent_like, self.recurrent_dropout, derived_seed(self._op_seed, 1))):
            mask = dropout_of_ones(like, rate, seed)
            masks.append(ops.reshape(mask, (batch, self.gates, tuple(mask.shape)[-1] // self.gates)))
        return masks

    def _step_mask(self, inputs, mask):
        """The mask as the op reads it: one 0/1 per sample and time step (Keras's RNN masks whole steps)."""
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if tuple(mask.shape) != tuple(inputs.shape[:2]):
            raise ShapeError(
                f'Layer "{self.name}" ({type(self).__name__}) got a mask of shape {format_shape(ops.shape(mask))} for '
                f"inputs of shape {format_shape(ops.shape(inputs))}; a recurrent layer takes one mask value per sample "
                "and time step, (batch, timesteps)."
            )
        return mask

    def compute_mask(self, inputs, previous_mask):
        """Keras's: the sequence keeps the mask (return_sequences), a last step or a state has none."""
        mask = previous_mask[0] if isinstance(previous_mask, (list, tuple)) else previous_mask
        output_mask = mask if self.return_sequences else None
        return [output_mask] + [None] * self.num_states if self.return_state else output_mask

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "recurrent_activation": self.recurrent_activation,
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "seed": self.seed,
            "zero_output_for_mask": self.zero_output_for_mask,
        }


class LSTM(_RNN):
    op, gates, num_states = "lstm", 4, 2

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = args.boolean("unit_forget_bias", unit_forget_bias)

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.units)
        return self.bias_initializer

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


class GRU(_RNN):
    op, gates = "gru", 3

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = args.boolean("reset_after", reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _op_attrs(self):
        return {"reset_after": self.reset_after}

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


class SimpleRNN(_RNN):
    op, gates = "simple_rnn", 1

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(units, activation=activation, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("recurrent_activation")  # Keras's SimpleRNN has none
        config.pop("seed")  # Keras's SimpleRNN takes a seed but does not write it
        return config
