"""BatchNormalization and LayerNormalization with Keras's defaults (epsilon 1e-3, momentum 0.99).

Under a mixed-precision policy both compute in float32, as Keras's do (16-bit inputs cast up,
weights and statistics read in float32, not autocast), and return the compute dtype.
"""

from kcomp import initializers, ops, regularizers
from kcomp.errors import ArgumentError, KcompError, ShapeError, format_shape
from kcomp.ir.types import normalize_axis
from kcomp.layers import args
from kcomp.layers.base import Layer


def _param_args(center, scale, beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint):
    args.no_constraint("beta_constraint", beta_constraint)
    args.no_constraint("gamma_constraint", gamma_constraint)
    return (
        args.boolean("center", center),
        args.boolean("scale", scale),
        initializers.get(beta_initializer),
        initializers.get(gamma_initializer),
        regularizers.get(beta_regularizer),
        regularizers.get(gamma_regularizer),
    )


class _Normalization(Layer):
    """What both normalizations share: optional gamma (scale) and beta (center)."""

    supports_masking = True  # as Keras's: a mask passes through

    def _add_scale_and_center(self, shape):
        if self.scale:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer, regularizer=self.gamma_regularizer,
                                         name="gamma", autocast=False)
        if self.center:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer, regularizer=self.beta_regularizer,
                                        name="beta", autocast=False)

    def _scale_and_center(self):
        return [w for w, on in ((getattr(self, "gamma", None), self.scale), (getattr(self, "beta", None), self.center)) if on]

    def _in_variable_dtype(self, inputs):
        """The inputs in the weights' dtype: under a mixed policy, float32, as Keras computes
        normalizations in at least float32; under a plain 16-bit policy, its 16-bit type (Keras
        would cast the 16-bit weights up instead; kcomp's statistics update reads them as kept)."""
        if ops.dtype(inputs) in ("float16", "bfloat16", "float32") and ops.dtype(inputs) != self.variable_dtype:
            return ops.cast(inputs, self.variable_dtype)
        return inputs

    def _in_compute_dtype(self, outputs):
        return outputs if ops.dtype(outputs) == self.compute_dtype else ops.cast(outputs, self.compute_dtype)

    def _param_config(self):
        return {
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
        }


class BatchNormalization(_Normalization):
    """Normalizes over the batch (and spatial) axes per channel of `axis`.

    Inference uses the moving statistics; training uses the batch's and (in the
    training step) updates moving = momentum * moving + (1 - momentum) * batch.

    synchronized=True (Keras's TensorFlow backend's meaning): in a data-parallel job
    (kcomp.distribution) the batch statistics in training are those of the whole global batch,
    summed over the processes; without a distribution, the batch's own, as synchronized=False.
    (Keras's torch and JAX backends refuse synchronized=True.) Either way the mean and the biased
    variance (the sum of squares about the mean over the count) normalize the batch and update
    the moving statistics, as Keras's moments do.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ArgumentError(f"Received: axis={axis!r}. kcomp's BatchNormalization normalizes one axis; pass an int.")
        if args.number("momentum", momentum, 0.0) > 1.0:
            raise ArgumentError(f"Received: momentum={momentum}. Expected a number in [0, 1].")
        args.number("epsilon", epsilon, 0.0, strictly=True)
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.synchronized = args.boolean("synchronized", synchronized)
        (self.center, self.scale, self.beta_initializer, self.gamma_initializer,
         self.beta_regularizer, self.gamma_regularizer) = _param_args(
            center, scale, beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint
        )
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)

    def build(self, input_shape):
        axis = normalize_axis(self.axis, len(input_shape))
        channels = input_shape[axis]
        if channels is None:
            raise ShapeError(f'Layer "{self.name}" (BatchNormalization) needs axis {self.axis} of its input to be known, received {format_shape(input_shape)}.')
        self._add_scale_and_center((channels,))
        self.moving_mean = self.add_weight(shape=(channels,), initializer=self.moving_mean_initializer, trainable=False, name="moving_mean",
                                           autocast=False)
        self.moving_variance = self.add_weight(shape=(channels,), initializer=self.moving_variance_initializer, trainable=False,
                                               name="moving_variance", autocast=False)

    def call(self, inputs, training=False, mask=None):
        # Keras: a frozen BatchNormalization (trainable=False, as in a frozen base model) runs in
        # inference mode, on its moving statistics, which then stay as they are.
        training = training and self.trainable
        if training and mask is not None:
            raise KcompError(
                f'Layer "{self.name}" (BatchNormalization) got a mask in training: Keras then takes the batch statistics '
                "over the unmasked steps only, which kcomp does not compute yet. Put it before the layer that makes "
                "the mask, or freeze it (trainable=False: its moving statistics need no mask)."
            )
        if training and self.synchronized:
            return self._synchronized_call(inputs)
        op = "batch_norm_train" if training else "batch_norm"
        result = ops.emit(
            op, self._in_variable_dtype(inputs), self.moving_mean, self.moving_variance, *self._scale_and_center(),
            axis=self.axis, epsilon=self.epsilon, center=self.center, scale=self.scale,
        )
        return self._in_compute_dtype(result[0] if training else result)

    def _synchronized_call(self, inputs):
        """Batch statistics over every process's rows: each process's per-channel sums and count are
        summed over the job (replica_sum, the identity in one process), the mean divides them, and
        the sum of squares about that mean is summed the same way (two passes over x, as one
        process's variance takes, not E[x^2] - E[x]^2). Autodiff gives the backward its own sums
        over the job, of dy and dy * (x - mean), through batch_norm's and replica_sum's gradients."""
        axis = normalize_axis(self.axis, len(inputs.shape))
        others = tuple(d for d in range(len(inputs.shape)) if d != axis)
        channels = (inputs.shape[axis],)
        local_sum = ops.emit("sum", inputs, axes=others, keepdims=True)
        total, count = ops.emit("replica_sum", local_sum, ops.emit("count", inputs, axes=others))
        mean = ops.divide(total, count)
        centered = ops.subtract(inputs, mean)
        squares = ops.emit("sum", ops.multiply(centered, centered), axes=others, keepdims=True)
        variance = ops.divide(ops.emit("replica_sum", squares), count)
        mean, variance = ops.reshape(mean, channels), ops.reshape(variance, channels)
        builder = ops.current_builder()
        if builder is not None:  # the training step updates the moving statistics from these
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                builder.batch_statistics.append((ops._as_value(moving, builder), batch))
        return ops.emit(
            "batch_norm", inputs, mean, variance, *self._scale_and_center(),
            axis=self.axis, epsilon=self.epsilon, center=self.center, scale=self.scale,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            **self._param_config(),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "synchronized": self.synchronized,
        }


class LayerNormalization(_Normalization):
    """Normalizes each item over `axis` (an int or a list of ints)."""

    autocast = False  # Keras's: its 16-bit inputs are not cast down first

    def __init__(
        self,
        axis=-1,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in self._axes()):
            raise ArgumentError(f"Received: axis={axis!r}. Expected an int or a list of ints.")
        args.number("epsilon", epsilon, 0.0, strictly=True)
        self.epsilon = float(epsilon)
        (self.center, self.scale, self.beta_initializer, self.gamma_initializer,
         self.beta_regularizer, self.gamma_regularizer) = _param_args(
            center, scale, beta_initializer, gamma_initializer, beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint
        )

    def _axes(self):
        return self.axis if isinstance(self.axis, tuple) else (self.axis,)

    def build(self, input_shape):
        axes = sorted(normalize_axis(a, len(input_shape)) for a in self._axes())
        shape = tuple(input_shape[a] for a in axes)
        if None in shape:
            raise ShapeError(f'Layer "{self.name}" (LayerNormalization) needs axis {self.axis} of its input to be known, received {format_shape(input_shape)}.')
        self._add_scale_and_center(shape)

    def call(self, inputs):
        outputs = ops.emit(
            "layer_norm", self._in_variable_dtype(inputs), *self._scale_and_center(),
            axes=self._axes(), epsilon=self.epsilon, center=self.center, scale=self.scale,
        )
        return self._in_compute_dtype(outputs)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, **self._param_config()}
