"""Keras's image augmentation layers: random in training (inside `fit`), the identity otherwise.

Each layer draws its per-image parameters with the `augment_params` op (Philox keyed by the
layer's seed and the training step, kcomp/ir/ops/augment.py: reproducible from the seed, a new
draw every step, no host round trip), then applies them: the geometric layers (flip, rotation,
zoom, translation, crop) resample through `affine_transform`; RandomContrast and RandomBrightness
are the elementwise `random_contrast` (against the per-image channel mean) and `random_brightness`,
whose per-image draws the generated pointwise kernel computes inline, fused with the clip.
Arguments, defaults and per-image semantics are Keras 3's (keras/src/layers/preprocessing/
image_preprocessing/); the random streams are kcomp's own, so single draws differ from Keras's.
"""

from kcomp import ops, session
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.ops.augment import FILL_MODES, INTERPOLATIONS
from kcomp.layers import args
from kcomp.layers.base import Layer

FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")


def factor_range(name, factor, bounds=(-1.0, 1.0), symmetric=False, open_lower=False):
    """Keras's factor forms: a number f means (max(-|f|, lower bound), |f|) (or (-|f|, |f|) where
    `symmetric`), a pair is sorted; every value given within `bounds` (the lower one excluded
    where `open_lower`: a zoom of 1 + (-1) would be 0)."""
    low = "(" if open_lower else "["
    bad = ArgumentError(f"Received: {name}={factor!r}. Expected a number or a pair of numbers in "
                        f"{low}{bounds[0]}, {bounds[1]}].")
    pair = isinstance(factor, (tuple, list))
    values = tuple(factor) if pair else (factor,)
    if (pair and len(values) != 2) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise bad
    if any(v > bounds[1] or v < bounds[0] or (open_lower and v == bounds[0]) for v in values):
        raise bad
    if pair:
        return tuple(sorted(float(v) for v in values))
    f = abs(float(factor))
    return (-f, f) if symmetric else (max(-f, bounds[0]), f)


class _Augmentation(Layer):
    """What every augmentation layer shares: the seed, float inputs, and the training switch."""

    def __init__(self, seed=None, data_format=None, **kwargs):
        super().__init__(**kwargs)
        args.channels_last(data_format)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ArgumentError(f"Received: seed={seed!r}. Expected an integer or None.")
        self.seed = seed
        self.data_format = data_format

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ShapeError(f'Layer "{self.name}" ({type(self).__name__}) expects batched NHWC images (rank 4), '
                             f"received input shape {format_shape(input_shape)}.")
        # As Dropout: a seed drawn in build order when none is given.
        self._op_seed = self.seed if self.seed is not None else session.draw_seed()

    def call(self, inputs, training=True):  # Keras's default: an eager call augments
        x = inputs if ops.dtype(inputs) == self.dtype else ops.cast(inputs, self.dtype)
        return self.augment(x) if args.boolean("training", training) else x

    def params(self, x, kind, factor=()):
        return ops.emit_random("augment_params", x, self._op_seed, True, kind=kind, factor=tuple(factor))

    def image_size(self, x):
        """Elements per image (the per-image draws of contrast and brightness index by it)."""
        _, *image = ops.shape(x)
        if None in image:
            raise ShapeError(f'Layer "{self.name}" ({type(self).__name__}) needs the image size known, received '
                             f"input shape {format_shape(ops.shape(x))}.")
        return image[0] * image[1] * image[2]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed, "data_format": self.data_format}


class _Resampling(_Augmentation):
    """A geometric layer: fill_mode, interpolation and fill_value as Keras's."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.fill_mode = args.choice("fill_mode", fill_mode, FILL_MODES)
        self.interpolation = args.choice("interpolation", interpolation, INTERPOLATIONS)
        self.fill_value = args.number("fill_value", fill_value)

    def resample(self, x, kind, factor):
        return ops.emit("affine_transform", x, self.params(x, kind, factor), interpolation=self.interpolation,
                        fill_mode=self.fill_mode, fill_value=float(self.fill_value))

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "fill_value": self.fill_value}


class RandomFlip(_Augmentation):
    """Flips each image with probability 1/2 (both axes together in "horizontal_and_vertical")."""

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.mode = args.choice("mode", mode, FLIP_MODES)

    def augment(self, x):
        # An index flip: integer source coordinates, read exactly by nearest interpolation.
        return ops.emit("affine_transform", x, self.params(x, f"flip_{self.mode}"), interpolation="nearest",
                        fill_mode="nearest")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class RandomRotation(_Resampling):
    """Rotates each image by an angle uniform in factor * 2 pi (positive: counter-clockwise)."""

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.factor = factor_range("factor", factor)

    def augment(self, x):
        return self.resample(x, "rotation", self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class RandomZoom(_Resampling):
    """Zooms each image by 1 + a factor uniform in height_factor (width_factor, or the same draw)."""

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self._factor = factor_range("height_factor", height_factor, symmetric=True, open_lower=True)
        if width_factor is not None:
            self._factor += factor_range("width_factor", width_factor, symmetric=True, open_lower=True)

    def augment(self, x):
        return self.resample(x, "zoom", self._factor)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


class RandomTranslation(_Resampling):
    """Shifts each image by fractions of its size uniform in height_factor and width_factor."""

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self._factor = (factor_range("height_factor", height_factor, symmetric=True)
                        + factor_range("width_factor", width_factor, symmetric=True))

    def augment(self, x):
        return self.resample(x, "translation", self._factor)

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


class RandomCrop(_Augmentation):
    """In training, a height x width window at a random offset (one offset per batch, as Keras 3
    draws it); where the image is not larger on both axes, Keras's centred crop of the target's
    aspect ratio. In inference the images pass unchanged, as Keras 3.15 passes them."""

    def __init__(self, height, width, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.height = args.positive_int("height", height)
        self.width = args.positive_int("width", width)

    def augment(self, x):
        _, in_h, in_w, _ = ops.shape(x)
        if in_h is None or in_w is None:
            raise ShapeError(f'Layer "{self.name}" (RandomCrop) needs the image height and width known, '
                             f"received input shape {format_shape(ops.shape(x))}.")
        if in_h > self.height and in_w > self.width:
            return ops.emit("affine_transform", x, self.params(x, "crop", (self.height, self.width)),
                            interpolation="nearest", fill_mode="nearest", output_size=(self.height, self.width))
        # Keras's else branch: the largest centred window of the target's aspect ratio, resized to it.
        crop_h = max(min(in_h, int(float(in_w * self.height) / self.width)), 1)
        crop_w = max(min(in_w, int(float(in_h * self.width) / self.height)), 1)
        if (crop_h, crop_w) != (self.height, self.width):
            raise ShapeError(f'Layer "{self.name}" (RandomCrop): images of {in_h}x{in_w} are not larger than the '
                             f"{self.height}x{self.width} crop, where Keras resizes a centred {crop_h}x{crop_w} "
                             "window; kcomp does not resize here. Crop to a size smaller than the images.")
        top, left = int(float(in_h - crop_h) / 2), int(float(in_w - crop_w) / 2)
        x = ops.emit("slice", x, axis=1, start=top, stop=top + crop_h)
        return ops.emit("slice", x, axis=2, start=left, stop=left + crop_w)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}


def value_range_arg(value_range):
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range):
        raise ArgumentError(f"Received: value_range={value_range!r}. Expected a pair (low, high) such as (0, 255).")
    return tuple(sorted(value_range))


class RandomContrast(_Augmentation):
    """(x - mean) * f + mean per image and channel, f uniform in [1 - lower, 1 + upper] of factor,
    clipped to value_range."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = factor_range("factor", factor, bounds=(0.0, 1.0))
        self.value_range = value_range_arg(value_range)

    def augment(self, x):
        # Keras's mean: over the height, then over the width; the factor drawn where it is applied
        # (random_contrast: elementwise against the per-image mean, one pointwise kernel with the clip).
        mean = ops.mean(ops.mean(x, axis=1, keepdims=True), axis=2, keepdims=True)
        contrasted = ops.emit_random("random_contrast", x, self._op_seed, True, mean, factor=self.factor,
                                     image_size=self.image_size(x))
        return ops.clip(contrasted, *map(float, self.value_range))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}


class RandomBrightness(_Augmentation):
    """Adds to each image a delta uniform in factor times the value range's width, clipped to value_range."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = factor_range("factor", factor)
        self.value_range = value_range_arg(value_range)

    def augment(self, x):
        width = float(self.value_range[1] - self.value_range[0])
        shifted = ops.emit_random("random_brightness", x, self._op_seed, True, factor=(*self.factor, width),
                                  image_size=self.image_size(x))
        return ops.clip(shifted, *map(float, self.value_range))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}
