"""The activation layers: Activation, ReLU, LeakyReLU, Softmax (with Keras's mask and axes), ELU and
PReLU (a learned slope per feature or shared over axes), with Keras's arguments and defaults."""

from kcomp import activations, initializers, ops, regularizers
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.types import is_static
from kcomp.layers import args
from kcomp.layers.base import Layer
from kcomp.layers.core import batch_dim


class Activation(Layer):
    supports_masking = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, inputs):
        return self.activation(inputs)

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class ReLU(Layer):
    supports_masking = True

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        args.number("max_value", max_value, 0.0, allow_none=True)
        args.number("negative_slope", negative_slope, 0.0)
        args.number("threshold", threshold)
        self.max_value, self.negative_slope, self.threshold = max_value, negative_slope, threshold

    def call(self, inputs):
        return activations.relu(inputs, self.negative_slope, self.max_value, self.threshold)

    def get_config(self):
        return {
            **super().get_config(),
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }


class LeakyReLU(Layer):
    supports_masking = True

    def __init__(self, negative_slope=0.3, alpha=None, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope = args.number("negative_slope", alpha if alpha is not None else negative_slope, 0.0)  # alpha: Keras 2's name

    def call(self, inputs):
        return activations.leaky_relu(inputs, self.negative_slope)

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope}


class Softmax(Layer):
    supports_masking = True

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = list(axis) if isinstance(axis, tuple) else axis  # Keras keeps a list; JSON does too

    def _softmax(self, x):
        if not isinstance(self.axis, (list, tuple)):
            return activations.softmax(x, self.axis)
        if len(self.axis) == 1:
            return activations.softmax(x, self.axis[0])
        # Keras's softmax over several axes: exp(x - logsumexp(x, axes)), as exp(x - max) / sum.
        shifted = ops.subtract(x, ops.max(x, axis=self.axis, keepdims=True))
        e = ops.emit("exponential", shifted)
        return ops.divide(e, ops.sum(e, axis=self.axis, keepdims=True))

    def call(self, inputs, mask=None):
        if mask is None:
            return self._softmax(inputs)
        # Keras's: masked logits (mask <= 0.5) become a large negative number, and masked outputs 0
        # (a row masked everywhere gives zeros, not a uniform distribution). `where`, not arithmetic,
        # so an inf or NaN logit under the mask does not leak into its row.
        keep = self._mask_for(inputs, mask)
        logits = ops.add(ops.emit("zeros_where_masked", inputs, keep), ops.multiply(ops.subtract(1.0, keep), -1e9))
        return ops.emit("zeros_where_masked", self._softmax(logits), keep)

    def _mask_for(self, inputs, mask):
        """The mask as 0/1 in the inputs' dtype, checked to broadcast against them as Keras checks it."""
        m_shape, x_shape = tuple(mask.shape), tuple(inputs.shape)
        if len(m_shape) > len(x_shape) or any(
            is_static(m) and is_static(x) and m not in (1, x) for m, x in zip(m_shape[::-1], x_shape[::-1])
        ):
            raise ShapeError(
                f'Layer "{self.name}" (Softmax): the mask must broadcast to the inputs (each mask dimension 1 or the '
                f"input's). Received: inputs.shape={format_shape(x_shape)}, mask.shape={format_shape(m_shape)}."
            )
        if ops.dtype(mask) not in ("float32", "float64", "float16", "bfloat16"):
            mask = ops.cast(mask, "float32")
        keep = ops.emit("greater", mask, 0.5)
        return keep if ops.dtype(keep) == ops.dtype(inputs) else ops.cast(keep, ops.dtype(inputs))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


class ELU(Layer):
    """alpha * (exp(x) - 1) below 0, x above."""

    supports_masking = True

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = args.number("alpha", alpha)

    def call(self, inputs):
        return ops.elu(inputs, self.alpha)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


class PReLU(Layer):
    """Leaky ReLU with a learned slope: relu(x) - alpha * relu(-x), alpha a weight of the input's
    shape without the batch, of size 1 along `shared_axes` (one slope shared over those axes)."""

    supports_masking = True

    def __init__(self, alpha_initializer="Zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        args.no_constraint("alpha_constraint", alpha_constraint)
        if shared_axes is not None:
            shared_axes = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            if not all(isinstance(a, int) and not isinstance(a, bool) and a >= 1 for a in shared_axes):
                raise ArgumentError(f"Received: shared_axes={shared_axes!r}. Expected axes >= 1 (axis 0 is the batch).")
        self.shared_axes = shared_axes

    def build(self, input_shape):
        shape = list(input_shape[1:])
        for axis in self.shared_axes or ():
            if axis >= len(input_shape):
                raise ShapeError(f'Layer "{self.name}" (PReLU): shared axis {axis} is not an axis of input shape '
                                 f"{format_shape(input_shape)}.")
            shape[axis - 1] = 1
        if any(d is None for d in shape):
            raise ShapeError(f'Layer "{self.name}" (PReLU) needs every unshared axis of its input known, received input '
                             f"shape {format_shape(input_shape)}; share the unknown axes (shared_axes=[...]).")
        self.alpha = self.add_weight(shape=tuple(shape), initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer, name="alpha")

    def call(self, inputs):
        x, alpha = inputs, self.alpha
        if not self.shared_axes and len(inputs.shape) > 2:
            # A slope per feature: seen as (batch, features) rows, alpha is a last-axis vector that a
            # generated kernel loads alongside x (an (h, w, c) operand of an image it cannot).
            x, alpha = ops.reshape(inputs, (batch_dim(inputs), -1)), ops.reshape(alpha, (-1,))
        negative = ops.multiply(alpha, ops.relu(ops.negative(x)))
        out = ops.subtract(ops.relu(x), negative)  # Keras's pos + (-alpha * relu(-x))
        return out if out.shape == inputs.shape else ops.reshape(out, tuple(inputs.shape))

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_initializer": initializers.serialize(self.alpha_initializer),
            "alpha_regularizer": regularizers.serialize(self.alpha_regularizer),
            "alpha_constraint": None,
            "shared_axes": self.shared_axes,
        }
