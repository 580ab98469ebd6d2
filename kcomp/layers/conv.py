"""Convolution and pooling layers over channels-last images (batch, height, width, channels)."""

from kcomp import activations, initializers, ops, regularizers
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.layers import args
from kcomp.layers.base import Layer

PADDINGS = ("valid", "same")


def _require_image(layer, input_shape):
    if len(input_shape) != 4:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) expects images of shape (batch, height, width, channels), '
            f"received input shape {format_shape(input_shape)}."
        )


class Conv2D(Layer):
    """2-D convolution, kernel of shape (kernel_h, kernel_w, in_channels / groups, filters)."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
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
        self.kernel_size = args.int_tuple("kernel_size", kernel_size, 2)
        self.strides = args.int_tuple("strides", strides, 2)
        self.padding = args.choice("padding", padding, PADDINGS)
        args.channels_last(data_format)
        self.data_format = data_format
        self.dilation_rate = args.int_tuple("dilation_rate", dilation_rate, 2)
        self.groups = args.positive_int("groups", groups)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ArgumentError(
                f"Received: strides={self.strides}, dilation_rate={self.dilation_rate}. Keras does not allow "
                "strides > 1 together with dilation_rate > 1; use one of them."
            )
        if self.filters % self.groups:
            raise ShapeError(f"Received: filters={filters}, groups={groups}. filters must be divisible by groups.")
        self.activation = activations.get(activation)
        self.use_bias = args.boolean("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        args.no_constraint("kernel_constraint", kernel_constraint)
        args.no_constraint("bias_constraint", bias_constraint)

    def build(self, input_shape):
        _require_image(self, input_shape)
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ShapeError(
                f'Layer "{self.name}" (Conv2D) needs a known channel count divisible by groups={self.groups}, '
                f"received input shape {format_shape(input_shape)}."
            )
        shape = (*self.kernel_size, channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer, regularizer=self.bias_regularizer, name="bias")

    def call(self, inputs):
        y = ops.conv2d(inputs, self.kernel, self.strides, self.padding, self.dilation_rate, self.groups)
        if self.use_bias:
            y = ops.bias_add(y, self.bias)
        return self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
        }


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = args.int_tuple("pool_size", pool_size, 2)
        # Keras: strides default to the pool size (non-overlapping windows).
        self.strides = args.int_tuple("strides", strides, 2) if strides is not None else self.pool_size
        self.padding = args.choice("padding", padding, PADDINGS)
        args.channels_last(data_format)
        self.data_format = data_format

    def build(self, input_shape):
        _require_image(self, input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "pool_size": self.pool_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
        }


class MaxPooling2D(_Pooling2D):
    def call(self, inputs):
        return ops.max_pool2d(inputs, self.pool_size, self.strides, self.padding)


class AveragePooling2D(_Pooling2D):
    def call(self, inputs):
        return ops.average_pool2d(inputs, self.pool_size, self.strides, self.padding)


class _GlobalPooling2D(Layer):
    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        args.channels_last(data_format)
        self.data_format = data_format
        self.keepdims = args.boolean("keepdims", keepdims)

    def build(self, input_shape):
        _require_image(self, input_shape)

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    def call(self, inputs):
        return ops.mean(inputs, axis=(1, 2), keepdims=self.keepdims)


class GlobalMaxPooling2D(_GlobalPooling2D):
    def call(self, inputs):
        return ops.max(inputs, axis=(1, 2), keepdims=self.keepdims)
