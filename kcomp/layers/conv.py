"""Convolution and pooling layers, channels-last: images (batch, height, width, channels) and
sequences (batch, steps, channels).

A 1-D layer is its 2-D cousin over a one-row image: the sequence is viewed as (batch, 1, steps,
channels) and a Conv1D kernel (k, in / groups, filters) as (1, k, in / groups, filters), both
reshapes (views, no copy), so Conv1D + bias + activation + a following pool fuse into one conv2d
kernel as Conv2D's do, a pooling layer is the pool2d kernel and a global pooling the reduce kernel.
"""

from kcomp import activations, initializers, ops, regularizers
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.layers import args
from kcomp.layers.base import Layer
from kcomp.layers.core import batch_dim

PADDINGS = ("valid", "same")
# What a layer of each rank takes: images (batch, height, width, channels), sequences (batch, steps, channels).
_INPUTS = {2: "images of shape (batch, height, width, channels)", 1: "sequences of shape (batch, steps, channels)"}


def _require_input(layer, input_shape, known_steps=False):
    """The input's rank (rank + 2); a 1-D window also needs the number of steps known."""
    if len(input_shape) != layer.rank + 2:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) expects {_INPUTS[layer.rank]}, '
            f"received input shape {format_shape(input_shape)}."
        )
    if known_steps and layer.rank == 1 and input_shape[1] is None:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) needs a known number of steps (kcomp sizes its '
            f"windows when the model is built), received input shape {format_shape(input_shape)}. Give the "
            "Input its length (pad the sequences with kcomp.preprocessing.sequence.pad_sequences)."
        )


def _as_image(x):
    """A sequence (batch, steps, channels) as a one-row image (batch, 1, steps, channels): a view."""
    return ops.reshape(x, (batch_dim(x), 1, *x.shape[1:]))


def _as_sequence(y):
    """A one-row image (batch, 1, steps, channels) back as a sequence: a view."""
    return ops.reshape(y, (batch_dim(y), *y.shape[2:]))


class _WindowLayer(Layer):
    """The arguments every Keras convolution shares (a window sliding over `rank` spatial axes, then
    bias and activation): Conv, ConvTranspose, DepthwiseConv and SeparableConv take these and add
    their own kernels."""

    rank = 2
    paddings = PADDINGS

    def _window_args(self, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                     bias_initializer, bias_regularizer, activity_regularizer, bias_constraint):
        self.kernel_size = args.int_tuple("kernel_size", kernel_size, self.rank)
        self.strides = args.int_tuple("strides", strides, self.rank)
        self.padding = args.choice("padding", padding, self.paddings)
        args.channels_last(data_format)
        self.data_format = data_format
        self.dilation_rate = args.int_tuple("dilation_rate", dilation_rate, self.rank)
        self.activation = activations.get(activation)
        self.use_bias = args.boolean("use_bias", use_bias)
        self.bias_initializer = initializers.get(bias_initializer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        args.no_constraint("bias_constraint", bias_constraint)

    def _no_strided_dilation(self):
        """Keras's Conv and ConvTranspose refuse strides > 1 with dilation_rate > 1."""
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ArgumentError(
                f"Received: strides={self.strides}, dilation_rate={self.dilation_rate}. Keras does not allow "
                "strides > 1 together with dilation_rate > 1; use one of them."
            )

    def _add_bias(self, units):
        if self.use_bias:
            self.bias = self.add_weight(shape=(units,), initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer, name="bias")

    def _bias_and_activation(self, y):
        if self.use_bias:
            y = ops.bias_add(y, self.bias)
        return self.activation(y)

    def _window_config(self):
        return {
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
        }


class _Conv(_WindowLayer):
    """Keras's convolution arguments for `rank` spatial axes (Keras's BaseConv)."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = args.positive_int("filters", filters)
        self._window_args(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                          bias_initializer, bias_regularizer, activity_regularizer, bias_constraint)
        self.groups = args.positive_int("groups", groups)
        self._no_strided_dilation()
        if self.filters % self.groups:
            raise ShapeError(f"Received: filters={filters}, groups={groups}. filters must be divisible by groups.")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        args.no_constraint("kernel_constraint", kernel_constraint)

    def build(self, input_shape):
        _require_input(self, input_shape, known_steps=True)
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ShapeError(
                f'Layer "{self.name}" ({type(self).__name__}) needs a known channel count divisible by '
                f"groups={self.groups}, received input shape {format_shape(input_shape)}."
            )
        shape = (*self.kernel_size, channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, name="kernel")
        self._add_bias(self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            **self._window_config(),
            "filters": self.filters,
            "groups": self.groups,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
        }


class Conv2D(_Conv):
    """2-D convolution, kernel of shape (kernel_h, kernel_w, in_channels / groups, filters)."""

    def call(self, inputs):
        y = ops.conv2d(inputs, self.kernel, self.strides, self.padding, self.dilation_rate, self.groups)
        return self._bias_and_activation(y)


class Conv1D(_Conv):
    """1-D convolution over steps, kernel of shape (kernel_size, in_channels / groups, filters);
    padding "causal" (Keras's) pads dilation_rate * (kernel_size - 1) zeros before the first step,
    so output[t] reads no input after t."""

    rank = 1
    paddings = (*PADDINGS, "causal")

    def call(self, inputs):
        x, padding = inputs, self.padding
        if padding == "causal":
            past = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            if past:
                x = ops.emit("pad", x, axis=1, before=past, after=0)
            padding = "valid"
        kernel = ops.reshape(self.kernel, (1, *self.kernel.shape))
        y = ops.conv2d(_as_image(x), kernel, (1, *self.strides), padding, (1, *self.dilation_rate), self.groups)
        return _as_sequence(self._bias_and_activation(y))


class _Pooling(Layer):
    """Keras's pooling arguments for `rank` spatial axes; `pool` is the 2-D op a window reduces with."""

    rank = 2
    pool = None

    def __init__(self, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = args.int_tuple("pool_size", pool_size, self.rank)
        # Keras: strides default to the pool size (non-overlapping windows).
        self.strides = args.int_tuple("strides", strides, self.rank) if strides is not None else self.pool_size
        self.padding = args.choice("padding", padding, PADDINGS)
        args.channels_last(data_format)
        self.data_format = data_format

    def build(self, input_shape):
        _require_input(self, input_shape, known_steps=True)

    def call(self, inputs):
        if self.rank == 2:
            return self.pool(inputs, self.pool_size, self.strides, self.padding)
        y = self.pool(_as_image(inputs), (1, *self.pool_size), (1, *self.strides), self.padding)
        return _as_sequence(y)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
        }


class _Pooling2D(_Pooling):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class MaxPooling2D(_Pooling2D):
    pool = staticmethod(ops.max_pool2d)


class AveragePooling2D(_Pooling2D):
    pool = staticmethod(ops.average_pool2d)


class MaxPooling1D(_Pooling):
    rank = 1
    pool = staticmethod(ops.max_pool2d)

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(_Pooling):  # Keras's has no default pool_size
    rank = 1
    pool = staticmethod(ops.average_pool2d)


class _GlobalPooling(Layer):
    """A reduction over every spatial axis (Keras's keepdims keeps them as size 1); `reduce` is the op."""

    rank = 2
    reduce = None

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        args.channels_last(data_format)
        self.data_format = data_format
        self.keepdims = args.boolean("keepdims", keepdims)

    def build(self, input_shape):
        _require_input(self, input_shape)

    def call(self, inputs):
        return self.reduce(inputs, axis=tuple(range(1, self.rank + 1)), keepdims=self.keepdims)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling):
    reduce = staticmethod(ops.mean)


class GlobalMaxPooling2D(_GlobalPooling):
    reduce = staticmethod(ops.max)


class GlobalAveragePooling1D(_GlobalPooling):
    """The mean over steps; with a mask, over the unmasked steps (Keras's: a sequence with every step
    masked gives 0 / 0). The mask stops here."""

    rank = 1
    reduce = staticmethod(ops.mean)
    supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        keep = ops.reshape(mask, (*mask.shape, 1))
        if ops.dtype(keep) != ops.dtype(inputs):
            keep = ops.cast(keep, ops.dtype(inputs))
        # x * 0 at a masked step is Keras's where(mask, x, 0) for every finite x.
        total = ops.sum(ops.multiply(inputs, keep), axis=1, keepdims=self.keepdims)
        return ops.divide(total, ops.sum(keep, axis=1, keepdims=self.keepdims))

    def compute_mask(self, inputs, previous_mask):
        return None


class GlobalMaxPooling1D(_GlobalPooling):
    """The maximum over steps. As Keras's, it does not read a mask (padded steps count) and drops it."""

    rank = 1
    reduce = staticmethod(ops.max)
