"""Keras 3's preprocessing layers that belong in the compiled graph: Rescaling, Normalization,
Resizing and CenterCrop, with Keras's arguments, defaults and numbers.

Rescaling and Normalization are elementwise ops (a multiply-add; a subtract and divide by
per-feature statistics), so the fusion pass computes them in the prologue of the first Dense or
Conv2D that reads them (no kernel of their own). Resizing is the IR's resize op (its own kernel:
kernels/resize.py); CenterCrop is two slices, or Keras's smart resize where the image is smaller
than the crop. None of them has trainable weights; Normalization's statistics are non-trainable
weights (mean, variance, count: Keras's names and order) saved and loaded with the model.

Images are channels-last (NHWC), as everywhere in kcomp.
"""

import math

import numpy as np
import torch

from kcomp import ops
from kcomp.errors import ArgumentError, KcompError, ShapeError, format_shape
from kcomp.ir.ops.image import INTERPOLATIONS
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.layers import args
from kcomp.layers.base import Layer

EPSILON = 1e-7  # keras.config.epsilon(): Normalization divides by max(sqrt(variance), it)


def _constant(values, shape):
    """A constant tensor of `shape` in the graph being traced (constant_array, reshaped), or a
    float32 tensor when the layer runs eagerly; a scalar stays a Python float (a literal)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        return float(values)
    builder = ops.current_builder()
    if builder is None:
        return torch.tensor(values.reshape(shape), dtype=torch.float32)
    flat = builder.emit1("constant_array", [], values=tuple(float(v) for v in values.ravel()), dtype="float32")
    return ops.reshape(flat, shape) if tuple(shape) != flat.shape else flat


def _as_float(x):
    """Keras's preprocessing layers compute in float32: integer images (uint8 pixels) are cast."""
    if isinstance(x, torch.Tensor):  # called eagerly (on any dtype torch has, uint8 too)
        return x if x.is_floating_point() else x.float()
    return x if ops.dtype(x) in FLOAT_DTYPES else ops.cast(x, "float32")


class Rescaling(Layer):
    """inputs * scale + offset; scale and offset are numbers or per-channel lists (last axis)."""

    supports_masking = True

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("scale", scale), ("offset", offset)):
            flat = np.ravel(np.asarray(value, dtype=object))
            if flat.size == 0 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
                raise ArgumentError(f"Received: {name}={value!r}. Expected a number or a list of numbers (one per channel).")
        self.scale, self.offset = scale, offset

    def call(self, inputs):
        x = _as_float(inputs)
        scale, offset = (_constant(v, np.shape(v)) for v in (self.scale, self.offset))
        if ops.dtype(x) != "float32":  # a mixed-precision layer's 16-bit inputs: its constants too, as Keras casts them
            scale, offset = (v if isinstance(v, float) else ops.cast(v, ops.dtype(x)) for v in (scale, offset))
        return ops.add(ops.multiply(x, scale), offset)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


class Normalization(Layer):
    """(inputs - mean) / max(sqrt(variance), 1e-7) per position of `axis` (Keras's formula);
    invert=True: mean + inputs * max(sqrt(variance), 1e-7).

    The statistics are given (mean=, variance=) or learned by adapt(data) from an array, a tensor,
    or an iterable of batches; until adapted they are Keras's initial ones (mean 0, variance 1).
    """

    supports_masking = True

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        axis = () if axis is None else (axis,) if isinstance(axis, int) and not isinstance(axis, bool) else axis
        if not isinstance(axis, (tuple, list)) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axis):
            raise ArgumentError(f"Received: axis={axis!r}. Expected an int, a list of ints, or None.")
        self.axis = tuple(axis)
        if (mean is None) != (variance is None):
            raise ArgumentError(
                f"When setting values directly, both `mean` and `variance` must be set. Received: mean={mean} and variance={variance}"
            )
        if mean is not None and np.shape(mean) != np.shape(variance):
            raise ArgumentError(
                f"When setting values directly, `mean` and `variance` must have the same shape. Received: "
                f"mean shape {np.shape(mean)} and variance shape {np.shape(variance)}"
            )
        if mean is not None and len(np.shape(mean)) > len(self.axis):
            raise ArgumentError(
                f"The rank of `mean` must be less than or equal to the number of axes ({len(self.axis)}). "
                f"Received: mean shape {np.shape(mean)} for axis {self.axis}"
            )
        self.input_mean, self.input_variance = mean, variance
        self.invert = args.boolean("invert", invert)
        self._input_shape = None

    def build(self, input_shape):
        ndim = len(input_shape)
        if any(not -ndim <= a < ndim for a in self.axis):
            raise ShapeError(f"All `axis` values must be in the range [-ndim, ndim). Received inputs with ndim={ndim}, while axis={self.axis}")
        self._keep = tuple(sorted(a % ndim for a in self.axis))
        if any(input_shape[d] is None for d in self._keep):
            raise ShapeError(
                f'Layer "{self.name}" (Normalization) needs the axes it keeps ({self.axis}) known; received {format_shape(input_shape)}.'
            )
        self._input_shape = tuple(input_shape)
        self._reduce = tuple(d for d in range(ndim) if d not in self._keep)
        self._broadcast = tuple(input_shape[d] if d in self._keep else 1 for d in range(ndim))
        self._stats_shape = tuple(input_shape[d] for d in self._keep)
        if self.input_mean is None:
            self.mean = self.add_weight(name="mean", shape=self._stats_shape, initializer="zeros", trainable=False)
            self.variance = self.add_weight(name="variance", shape=self._stats_shape, initializer="ones", trainable=False)
            # Keras keeps it and never counts into it (keras/src/layers/preprocessing/normalization.py).
            self.count = self.add_weight(name="count", shape=(), dtype="int32", initializer="zeros", trainable=False)

    def _given(self, values):
        """A given mean or variance as Keras places it: its axes are the last kept axes."""
        values = np.asarray(values, dtype=np.float64)
        shape = [1] * len(self._broadcast)
        for i in range(1, values.ndim + 1):
            shape[self._keep[-i]] = values.shape[-i]
        return np.broadcast_to(values.reshape(shape), self._broadcast)

    def call(self, inputs):
        x = _as_float(inputs)
        if self.input_mean is not None:
            mean = _constant(self._given(self.input_mean), self._broadcast)
            variance = _constant(self._given(self.input_variance), self._broadcast)
        else:
            mean, variance = ops.reshape(self.mean, self._broadcast), ops.reshape(self.variance, self._broadcast)
        denominator = ops.maximum(ops.sqrt(variance), EPSILON)
        if self.invert:
            return ops.add(mean, ops.multiply(x, denominator))
        return ops.divide(ops.subtract(x, mean), denominator)

    # -- adapt ----------------------------------------------------------------------------------
    def adapt(self, data, batch_size=None, steps=None):
        """Learn mean and variance from `data`: an array or tensor (all at once, as Keras 3), or an
        iterable of batches (Keras's streaming update; `steps` batches at most). batch_size cuts
        an array into batches of that many items, as Keras 2's adapt did."""
        if self.input_mean is not None:
            raise KcompError(f'Layer "{self.name}" (Normalization) was given mean and variance; it has nothing to adapt.')
        if steps is not None:
            args.positive_int("steps", steps)
        if isinstance(data, (np.ndarray, torch.Tensor)) and batch_size is not None:
            data = [data[i:i + args.positive_int("batch_size", batch_size)] for i in range(0, len(data), batch_size)]
        if isinstance(data, (np.ndarray, torch.Tensor)):
            self._check_adapt_shape(tuple(data.shape))
            if isinstance(data, np.ndarray):
                mean, variance = np.mean(data, axis=self._reduce), np.var(data, axis=self._reduce)
            else:
                mean, variance = data.mean(dim=self._reduce), data.var(dim=self._reduce, correction=0)
        elif hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict)):
            mean, variance = self._adapt_batches(data, steps)
        else:
            raise ArgumentError(
                f"Unsupported data type: {type(data).__name__}. adapt takes a NumPy array, a torch tensor, "
                "or an iterable of batches (a list of arrays, a generator yielding batches)."
            )
        self.mean.assign(np.asarray(mean, dtype=np.float32).reshape(self._stats_shape))
        self.variance.assign(np.asarray(variance, dtype=np.float32).reshape(self._stats_shape))

    def _check_adapt_shape(self, shape):
        if not self.built:
            self._build_for(shape)
        elif len(shape) != len(self._input_shape) or any(shape[d] != self._input_shape[d] for d in self._keep):
            raise ShapeError(
                f"The layer was built with input_shape={self._input_shape}, but adapt() is being called with data "
                f"with an incompatible shape, data.shape={shape}"
            )

    def _adapt_batches(self, data, steps):
        """Keras's streaming mean and variance over batches, in float32 as Keras computes them."""
        total_mean = total_var = None
        total_count = 0
        for i, batch in enumerate(data):
            if steps is not None and i >= steps:
                break
            batch = batch[0] if isinstance(batch, (tuple, list)) else batch  # (x, y) batches: x
            batch = torch.as_tensor(np.asarray(batch) if not isinstance(batch, torch.Tensor) else batch, dtype=torch.float32)
            self._check_adapt_shape(tuple(batch.shape))
            if total_mean is None:
                total_mean, total_var = torch.zeros(self._stats_shape), torch.zeros(self._stats_shape)
            batch_mean = batch.mean(dim=self._reduce) if self._reduce else batch
            batch_var = batch.var(dim=self._reduce, correction=0) if self._reduce else torch.zeros_like(batch)
            total_count += math.prod(batch.shape[d] for d in self._reduce) if self._reduce else 1
            batch_weight = float(math.prod(batch.shape[d] for d in self._reduce) if self._reduce else 1) / total_count
            existing_weight = 1.0 - batch_weight
            new_mean = total_mean * existing_weight + batch_mean * batch_weight
            total_var = (total_var + (total_mean - new_mean) ** 2) * existing_weight + (
                batch_var + (batch_mean - new_mean) ** 2
            ) * batch_weight
            total_mean = new_mean
        if total_mean is None:
            raise ArgumentError("adapt() received an empty iterable (no batches). Pass at least one batch.")
        return total_mean.numpy(), total_var.numpy()

    def get_config(self):
        return {
            **super().get_config(),
            "axis": self.axis,
            "invert": self.invert,
            "mean": None if self.input_mean is None else np.asarray(self.input_mean).tolist(),
            "variance": None if self.input_variance is None else np.asarray(self.input_variance).tolist(),
        }


def _image_size(layer, shape):
    """(height, width) of an NHWC input, known at build time."""
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) takes a batch of images (batch, height, width, channels) '
            f"with known height and width; received {format_shape(shape)}."
        )
    return shape[1], shape[2]


def _crop(x, top, left, height, width):
    """x[:, top:top + height, left:left + width, :] as slices (none where nothing is cut)."""
    for axis, start, size in ((1, top, height), (2, left, width)):
        if (start, size) != (0, ops.shape(x)[axis]):
            x = ops.emit("slice", x, axis=axis, start=start, stop=start + size)
    return x


def _aspect_crop(height, width, target_height, target_width):
    """Keras's crop box for crop_to_aspect_ratio (and CenterCrop's smart resize): (top, left, h, w)."""
    crop_height = max(min(height, int(float(width * target_height) / target_width)), 1)
    crop_width = max(min(width, int(float(height * target_width) / target_height)), 1)
    return int(float(height - crop_height) / 2), int(float(width - crop_width) / 2), crop_height, crop_width


def _resize(x, height, width, interpolation):
    if ops.shape(x)[1:3] == (height, width) and interpolation == "nearest":
        return x  # every output pixel is its own input pixel
    return ops.emit("resize", x, height=height, width=width, interpolation=interpolation)


class Resizing(Layer):
    """Images resized to (height, width), as keras.ops.image.resize on torch (antialias=False)."""

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                 fill_mode="constant", fill_value=0.0, antialias=False, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = args.positive_int("height", height), args.positive_int("width", width)
        if interpolation not in INTERPOLATIONS:
            raise ArgumentError(
                f"Received: interpolation={interpolation!r}. kcomp resizes with {sorted(INTERPOLATIONS)} "
                "(Keras's torch backend numbers); pick one of them."
            )
        self.interpolation = interpolation
        self.crop_to_aspect_ratio = args.boolean("crop_to_aspect_ratio", crop_to_aspect_ratio)
        self.pad_to_aspect_ratio = args.boolean("pad_to_aspect_ratio", pad_to_aspect_ratio)
        if self.crop_to_aspect_ratio and self.pad_to_aspect_ratio:
            raise ArgumentError("Only one of `pad_to_aspect_ratio` & `crop_to_aspect_ratio` can be `True`.")
        if fill_mode != "constant":
            raise ArgumentError(f"Invalid value for argument `fill_mode`. Only `'constant'` is supported. Received: fill_mode={fill_mode}")
        self.fill_mode = fill_mode
        self.fill_value = args.number("fill_value", fill_value)
        if self.pad_to_aspect_ratio and self.fill_value != 0:
            raise ArgumentError(f"Received: fill_value={fill_value!r}. kcomp pads to the aspect ratio with zeros only; pass 0.")
        if antialias:
            raise ArgumentError("Received: antialias=True. kcomp resizes without antialiasing (Keras's default); pass False.")
        self.antialias = False
        args.channels_last(data_format)
        self.data_format = "channels_last"

    def call(self, inputs):
        if not (inputs.is_floating_point() if isinstance(inputs, torch.Tensor) else ops.dtype(inputs) in FLOAT_DTYPES):
            raise KcompError(
                f'Layer "{self.name}" (Resizing) received integer images: Keras then rounds the resized pixels back to '
                "the integer dtype, which kcomp does not do. Give it float images (a Rescaling first, or cast the data)."
            )
        x = inputs
        height, width = _image_size(self, ops.shape(x))
        if self.crop_to_aspect_ratio:
            x = _crop(x, *_aspect_crop(height, width, self.height, self.width))
        elif self.pad_to_aspect_ratio:
            # Keras pads each side by the start offset (so an odd difference pads one pixel less).
            pad_height = max(height, int(float(width * self.height) / self.width))
            pad_width = max(width, int(float(height * self.width) / self.height))
            for axis, pad in ((1, int(float(pad_height - height) / 2)), (2, int(float(pad_width - width) / 2))):
                if pad > 0:
                    x = ops.emit("pad", x, axis=axis, before=pad, after=pad)
        return _resize(x, self.height, self.width, self.interpolation)

    def get_config(self):
        return {
            **super().get_config(), "data_format": self.data_format, "height": self.height, "width": self.width,
            "interpolation": self.interpolation, "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
            "pad_to_aspect_ratio": self.pad_to_aspect_ratio, "fill_mode": self.fill_mode, "fill_value": self.fill_value,
            "antialias": self.antialias,
        }


class CenterCrop(Layer):
    """The central (height, width) window; an image smaller than it on either side is cropped to
    the target's aspect ratio and resized (bilinear), as Keras's smart_resize does."""

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = args.positive_int("height", height), args.positive_int("width", width)
        args.channels_last(data_format)
        self.data_format = "channels_last"

    def call(self, inputs):
        x = _as_float(inputs)
        height, width = _image_size(self, ops.shape(x))
        if height >= self.height and width >= self.width:
            return _crop(x, (height - self.height) // 2, (width - self.width) // 2, self.height, self.width)
        x = _crop(x, *_aspect_crop(height, width, self.height, self.width))
        return _resize(x, self.height, self.width, "bilinear")

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format, "height": self.height, "width": self.width}
