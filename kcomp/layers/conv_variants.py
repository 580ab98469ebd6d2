"""Conv2DTranspose, DepthwiseConv2D and SeparableConv2D: Keras's arguments, defaults and weights,
built from the conv ops (kcomp/ir/ops/conv.py, conv_grad.py), channels-last.

A transposed convolution is the input gradient of a convolution: Keras's Conv2DTranspose with
kernel (kh, kw, filters, in) is conv2d_backprop_input of its input with that kernel read as a conv
kernel (kh, kw, filters, in), so it runs the conv2d_grad_input template, and its own gradients
are a conv2d and a conv2d_backprop_filter. A depthwise convolution is conv2d with groups equal to
the input channels (the kernel (kh, kw, in, depth_multiplier) read as (kh, kw, 1, in * dm): output
channel c * dm + m reads input channel c, as Keras and torch order them); SeparableConv2D follows
it with a 1x1 pointwise conv2d, which the decompose pass turns into a matmul.
"""

from kcomp import initializers, ops, regularizers
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.ops.conv import output_size, pads_before
from kcomp.layers import args
from kcomp.layers.conv import _require_input, _WindowLayer


def transposed_extent(size, window, stride, dilation, padding, output_padding):
    """(crop_before, out_size) of Keras 3's transposed convolution along one axis.

    The full transposed convolution of `size` pixels has (size - 1) * stride + effective window
    pixels; Keras (keras/src/backend/common/backend_utils.py, as its torch and JAX backends compute
    it) keeps `out_size` of them starting at `crop_before`; a negative crop adds zero pixels."""
    k = dilation * (window - 1) + 1
    if padding == "valid":
        extra = max(k, stride) - k if output_padding is None else output_padding
        before, after = k - 1, k - 1 + extra
    else:
        total = stride + k - 2 if output_padding is None else k + k % 2 - 2 + output_padding
        before = min(total // 2 + total % 2, k - 1)
        after = total - before
    full = (size - 1) * stride + k
    crop_before, crop_after = k - 1 - before, k - 1 - after
    return crop_before, full - crop_before - crop_after


def _conv_transpose(x, kernel, strides, padding, output_padding, dilation):
    """Keras's conv_transpose of NHWC x with a (kh, kw, filters, in) kernel."""
    (h, w), window = x.shape[1:3], kernel.shape[:2]
    extents = [
        transposed_extent(n, k, s, d, padding, None if output_padding is None else op)
        for n, k, s, d, op in zip((h, w), window, strides, dilation, output_padding or (None, None))
    ]
    size = tuple(out for _, out in extents)
    crops = tuple(crop for crop, _ in extents)
    fits = all(output_size(o, k, s, d, padding) == n for o, k, s, d, n in zip(size, window, strides, dilation, (h, w)))
    if fits and pads_before(*size, window, strides, dilation, padding) == crops:
        # The common case: exactly the input gradient of a conv of this padding on the output.
        return ops.emit("conv2d_backprop_input", x, kernel, input_size=size, strides=strides, padding=padding,
                        dilation=dilation)
    # Otherwise ('same' with output_padding=0 and an even window, where Keras keeps a window one
    # pixel later than a conv's 'same' padding would): the full transposed convolution ('valid'),
    # cropped as Keras does. crop_before >= 0 always (Keras's left pad is at most window - 1); the
    # output may run past the full one (a negative crop after), then zeros are added.
    full = tuple((n - 1) * s + d * (k - 1) + 1 for n, k, s, d in zip((h, w), window, strides, dilation))
    y = ops.emit("conv2d_backprop_input", x, kernel, input_size=full, strides=strides, padding="valid",
                 dilation=dilation)
    for axis, crop, out, length in zip((1, 2), crops, size, full):
        if crop > 0 or out < length:
            y = ops.emit("slice", y, axis=axis, start=crop, stop=min(length, crop + out))
        if length - crop < out:
            y = ops.emit("pad", y, axis=axis, before=0, after=out - (length - crop))
    return y


def _known_image(layer, input_shape):
    _require_input(layer, input_shape)
    if any(d is None for d in input_shape[1:]):
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) needs known height, width and channels (kcomp sizes '
            f"its windows when the model is built), received input shape {format_shape(input_shape)}."
        )
    return input_shape[-1]


class Conv2DTranspose(_WindowLayer):
    """Transposed 2-D convolution (Keras's Conv2DTranspose), kernel (kernel_h, kernel_w, filters, in_channels)."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        output_padding=None,
        data_format=None,
        dilation_rate=(1, 1),
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
        self.output_padding = None
        if output_padding is not None:
            self.output_padding = _non_negative_pair("output_padding", output_padding)
            for op, s in zip(self.output_padding, self.strides):
                if op >= s:
                    raise ArgumentError(
                        f"Received: output_padding={self.output_padding}, strides={self.strides}. Each output_padding "
                        "must be strictly less than the stride along its axis (Keras's rule)."
                    )
        self._no_strided_dilation()
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        args.no_constraint("kernel_constraint", kernel_constraint)

    def build(self, input_shape):
        channels = _known_image(self, input_shape)
        self.kernel = self.add_weight(shape=(*self.kernel_size, self.filters, channels), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, name="kernel")
        self._add_bias(self.filters)

    def call(self, inputs):
        y = _conv_transpose(inputs, self.kernel, self.strides, self.padding, self.output_padding, self.dilation_rate)
        return self._bias_and_activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            **self._window_config(),
            "filters": self.filters,
            "output_padding": self.output_padding,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
        }


def _non_negative_pair(name, value):
    given = value
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    value = tuple(value) if isinstance(value, (list, tuple)) else value
    if not isinstance(value, tuple) or len(value) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ArgumentError(f"Received: {name}={given!r}. Expected a non-negative integer or a tuple of 2 of them.")
    return value


class _DepthwiseArgs(_WindowLayer):
    """What DepthwiseConv2D and SeparableConv2D share: the depthwise kernel (kh, kw, in, depth_multiplier)."""

    def _depthwise_args(self, depth_multiplier, depthwise_initializer, depthwise_regularizer, depthwise_constraint):
        self.depth_multiplier = args.positive_int("depth_multiplier", depth_multiplier)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        args.no_constraint("depthwise_constraint", depthwise_constraint)

    def _add_depthwise_kernel(self, channels, name):
        return self.add_weight(shape=(*self.kernel_size, channels, self.depth_multiplier),
                               initializer=self.depthwise_initializer, regularizer=self.depthwise_regularizer, name=name)

    def _depthwise(self, x, kernel):
        """conv2d with groups = in channels: output channel c * depth_multiplier + m reads channel c."""
        kh, kw, channels, dm = kernel.shape
        grouped = ops.reshape(kernel, (kh, kw, 1, channels * dm))
        return ops.conv2d(x, grouped, self.strides, self.padding, self.dilation_rate, groups=channels)

    def _depthwise_config(self):
        return {
            **self._window_config(),
            "depth_multiplier": self.depth_multiplier,
            "depthwise_initializer": initializers.serialize(self.depthwise_initializer),
            "depthwise_regularizer": regularizers.serialize(self.depthwise_regularizer),
        }


class DepthwiseConv2D(_DepthwiseArgs):
    """Depthwise 2-D convolution, kernel (kernel_h, kernel_w, in_channels, depth_multiplier); the output
    has in_channels * depth_multiplier channels."""

    def __init__(
        self,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        depth_multiplier=1,
        data_format=None,
        dilation_rate=(1, 1),
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._window_args(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                          bias_initializer, bias_regularizer, activity_regularizer, bias_constraint)
        self._depthwise_args(depth_multiplier, depthwise_initializer, depthwise_regularizer, depthwise_constraint)

    def build(self, input_shape):
        channels = _known_image(self, input_shape)
        self.kernel = self._add_depthwise_kernel(channels, "kernel")
        self._add_bias(channels * self.depth_multiplier)

    def call(self, inputs):
        return self._bias_and_activation(self._depthwise(inputs, self.kernel))

    def get_config(self):
        return {**super().get_config(), **self._depthwise_config()}


class SeparableConv2D(_DepthwiseArgs):
    """A depthwise convolution (kernel (kernel_h, kernel_w, in_channels, depth_multiplier)) then a 1x1
    pointwise one (kernel (1, 1, in_channels * depth_multiplier, filters)), the bias after it."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=(1, 1),
        padding="valid",
        data_format=None,
        dilation_rate=(1, 1),
        depth_multiplier=1,
        activation=None,
        use_bias=True,
        depthwise_initializer="glorot_uniform",
        pointwise_initializer="glorot_uniform",
        bias_initializer="zeros",
        depthwise_regularizer=None,
        pointwise_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        depthwise_constraint=None,
        pointwise_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = args.positive_int("filters", filters)
        self._window_args(kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias,
                          bias_initializer, bias_regularizer, activity_regularizer, bias_constraint)
        self._depthwise_args(depth_multiplier, depthwise_initializer, depthwise_regularizer, depthwise_constraint)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        args.no_constraint("pointwise_constraint", pointwise_constraint)

    def build(self, input_shape):
        channels = _known_image(self, input_shape)
        self.depthwise_kernel = self._add_depthwise_kernel(channels, "depthwise_kernel")
        self.pointwise_kernel = self.add_weight(
            shape=(1, 1, channels * self.depth_multiplier, self.filters), initializer=self.pointwise_initializer,
            regularizer=self.pointwise_regularizer, name="pointwise_kernel",
        )
        self._add_bias(self.filters)

    def call(self, inputs):
        y = ops.conv2d(self._depthwise(inputs, self.depthwise_kernel), self.pointwise_kernel)
        return self._bias_and_activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            **self._depthwise_config(),
            "filters": self.filters,
            "pointwise_initializer": initializers.serialize(self.pointwise_initializer),
            "pointwise_regularizer": regularizers.serialize(self.pointwise_regularizer),
        }
