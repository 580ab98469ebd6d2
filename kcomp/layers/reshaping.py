"""Layers that move pixels or steps without weights: ZeroPadding1D/2D, Cropping1D/2D,
UpSampling1D/2D and RepeatVector, channels-last as Keras's defaults.

Pads and crops are the IR's pad and slice, one spatial axis at a time (a compiled plan runs a chain
of them, with the elementwise ops around it, as one kernel: kernels/pad_slice.py). The upsamplings
and RepeatVector of float tensors are the resize op (one kernel forward, kernels/resize.py, and one
backward, kernels/resize_grad.py): UpSampling2D's "bilinear" is Keras's keras.ops.image.resize
(torch backend: F.interpolate, align_corners=False, antialias=False), and its "nearest", Keras's
ops.repeat of rows and columns, is resize's "nearest" ("nearest-exact": output k reads
floor((k + 0.5) / s) = k // s for an integer factor s); UpSampling1D and RepeatVector are that
nearest resize of steps viewed as an image one pixel wide.

Other dtypes (resize takes floats) are written in data-movement ops: the repeats interleave copies
(reshape, concat), and "bilinear" blends each of the s phases, output pixel s*k + r reading source
position k + (r + 0.5) / s - 0.5: pixel k and its neighbour before or after (the edge pixel repeated
past the border), one elementwise expression of x and x shifted by one pixel.
"""

from kcomp import ops
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.types import FLOAT_DTYPES, is_static
from kcomp.layers import args
from kcomp.layers.base import Layer
from kcomp.layers.core import batch_dim


def _pair_of_pairs(name, value, dims):
    """Keras's padding/cropping argument for `dims` spatial axes -> ((before, after), ...):
    an int (everywhere), one int per axis (both sides), or a (before, after) pair per axis."""
    given = value
    if dims == 1 and isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = (tuple(value),)  # the 1-D layers take (before, after) directly
    if isinstance(value, int) and not isinstance(value, bool):
        value = ((value, value),) * dims
    elif isinstance(value, (list, tuple)) and len(value) == dims:
        value = tuple((v, v) if isinstance(v, int) else tuple(v) if isinstance(v, (list, tuple)) else None for v in value)
    else:
        value = None
    ok = value is not None and all(
        isinstance(p, tuple) and len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
        for p in value
    )
    if not ok:
        form = "an int or a tuple of 2 ints" if dims == 1 else "an int, a tuple of 2 ints or a tuple of 2 tuples of 2 ints"
        raise ArgumentError(f"Received: {name}={given!r}. Expected {form}, all >= 0.")
    return value


def _data_format(data_format) -> str:
    args.channels_last(data_format)
    return "channels_last"  # Keras's config writes the resolved format


def _require_rank(layer, input_shape, rank, what):
    if len(input_shape) != rank:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) expects {what} of rank {rank}, '
            f"received input shape {format_shape(input_shape)}."
        )


def pad_axes(x, pads):
    """Zeros around spatial axes 1, 2, ...: pads[i] = (before, after) for axis i + 1."""
    for axis, (before, after) in enumerate(pads, start=1):
        if before or after:
            x = ops.emit("pad", x, axis=axis, before=before, after=after)
    return x


def crop_axes(x, crops):
    for axis, (before, after) in enumerate(crops, start=1):
        if before or after:
            x = ops.emit("slice", x, axis=axis, start=before, stop=x.shape[axis] - after)
    return x


def resizable(x, axes) -> bool:
    """Whether x is a float tensor whose `axes` have sizes known at build time (what resize takes)."""
    return ops.dtype(x) in FLOAT_DTYPES and all(is_static(x.shape[a]) for a in axes)


def upsample_steps(x, times):
    """Each step of (batch, steps, features) `times` times in a row: a nearest resize of the steps
    viewed as an image one pixel wide."""
    n, steps, features = batch_dim(x), x.shape[1], x.shape[2]
    image = ops.reshape(x, (n, steps, 1, features))
    return ops.reshape(ops.emit("resize", image, height=steps * times, width=1, interpolation="nearest"),
                       (n, steps * times, features))


def repeat_each(x, axis, times):
    """Each entry along `axis` `times` times in a row (numpy's repeat): x interleaved with itself."""
    return x if times == 1 else interleave([x] * times, axis)


def interleave(phases, axis):
    """Phase r's entry k lands at k * len(phases) + r along `axis`: each phase gets a new axis of 1
    after `axis`, they are concatenated along it, and it is merged into `axis`."""
    shape = tuple(phases[0].shape)
    spread = [ops.reshape(p, (*shape[: axis + 1], 1, *shape[axis + 1:])) for p in phases]
    return ops.reshape(ops.concatenate(spread, axis=axis + 1), (*shape[:axis], shape[axis] * len(phases), *shape[axis + 1:]))


def _shifted(x, axis, by):
    """x[k + by] along `axis` (by = +1 or -1), the edge entry repeated where that leaves the axis."""
    size = x.shape[axis]
    if size == 1:
        return x
    if by > 0:
        parts = [ops.emit("slice", x, axis=axis, start=1, stop=size), ops.emit("slice", x, axis=axis, start=size - 1, stop=size)]
    else:
        parts = [ops.emit("slice", x, axis=axis, start=0, stop=1), ops.emit("slice", x, axis=axis, start=0, stop=size - 1)]
    return ops.concatenate(parts, axis=axis)


def linear_upsample(x, axis, times):
    """Half-pixel linear interpolation to `times` x the size along `axis` (see the module doc)."""
    if times == 1:
        return x
    after, before = _shifted(x, axis, 1), _shifted(x, axis, -1)
    phases = []
    for r in range(times):
        frac = (r + 0.5) / times - 0.5
        neighbour, weight = (after, frac) if frac >= 0 else (before, -frac)
        phases.append(ops.add(ops.multiply(x, 1.0 - weight), ops.multiply(neighbour, weight)) if weight else x)
    return interleave(phases, axis)


class ZeroPadding1D(Layer):
    """Zeros before and after the steps of (batch, steps, channels)."""

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        (self.padding,) = _pair_of_pairs("padding", padding, 1)
        self.data_format = _data_format(data_format)

    def build(self, input_shape):
        _require_rank(self, input_shape, 3, "sequences (batch, steps, channels)")

    def call(self, inputs):
        return pad_axes(inputs, (self.padding,))

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


class ZeroPadding2D(Layer):
    """Rows of zeros above and below, columns of zeros left and right of NHWC images."""

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pair_of_pairs("padding", padding, 2)
        self.data_format = _data_format(data_format)

    def build(self, input_shape):
        _require_rank(self, input_shape, 4, "images (batch, height, width, channels)")

    def call(self, inputs):
        return pad_axes(inputs, self.padding)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "data_format": self.data_format}


def _check_crop(layer, input_shape, crops):
    for axis, (before, after) in enumerate(crops, start=1):
        size = input_shape[axis]
        if size is None:
            raise ShapeError(f'Layer "{layer.name}" ({type(layer).__name__}) needs axis {axis} of its input known, '
                             f"received input shape {format_shape(input_shape)}.")
        if before + after >= size:
            raise ShapeError(
                f'Layer "{layer.name}" ({type(layer).__name__}): cropping {(before, after)} leaves nothing of axis {axis} '
                f"(size {size}) of input shape {format_shape(input_shape)}; crop less than the input size."
            )


class Cropping1D(Layer):
    """Steps cut off the start and the end of (batch, steps, channels)."""

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        (self.cropping,) = _pair_of_pairs("cropping", cropping, 1)

    def build(self, input_shape):
        _require_rank(self, input_shape, 3, "sequences (batch, steps, channels)")
        _check_crop(self, input_shape, (self.cropping,))

    def call(self, inputs):
        return crop_axes(inputs, (self.cropping,))

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping}


class Cropping2D(Layer):
    """Rows cut off the top and bottom, columns off the left and right of NHWC images."""

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pair_of_pairs("cropping", cropping, 2)
        self.data_format = _data_format(data_format)

    def build(self, input_shape):
        _require_rank(self, input_shape, 4, "images (batch, height, width, channels)")
        _check_crop(self, input_shape, self.cropping)

    def call(self, inputs):
        return crop_axes(inputs, self.cropping)

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping, "data_format": self.data_format}


class UpSampling1D(Layer):
    """Each step repeated `size` times."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = args.positive_int("size", size)

    def build(self, input_shape):
        _require_rank(self, input_shape, 3, "sequences (batch, steps, channels)")

    def call(self, inputs):
        if self.size > 1 and resizable(inputs, (1, 2)):
            return upsample_steps(inputs, self.size)
        return repeat_each(inputs, 1, self.size)

    def get_config(self):
        return {**super().get_config(), "size": self.size}


INTERPOLATIONS = ("nearest", "bilinear")


class UpSampling2D(Layer):
    """NHWC images enlarged `size` times: each pixel repeated ("nearest") or blended with its
    neighbours ("bilinear", half-pixel centres as Keras's image.resize)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = args.int_tuple("size", size, 2)
        self.data_format = _data_format(data_format)
        if interpolation not in INTERPOLATIONS:
            raise ArgumentError(
                f"Received: interpolation={interpolation!r}. kcomp's UpSampling2D takes {list(INTERPOLATIONS)} "
                "(Keras's bicubic and lanczos are not supported)."
            )
        self.interpolation = interpolation

    def build(self, input_shape):
        _require_rank(self, input_shape, 4, "images (batch, height, width, channels)")

    def call(self, inputs):
        (sh, sw), (h, w) = self.size, inputs.shape[1:3]
        if (sh, sw) != (1, 1) and resizable(inputs, (1, 2)):
            return ops.emit("resize", inputs, height=h * sh, width=w * sw, interpolation=self.interpolation)
        resize = repeat_each if self.interpolation == "nearest" else linear_upsample
        return resize(resize(inputs, 1, self.size[0]), 2, self.size[1])

    def get_config(self):
        return {**super().get_config(), "size": self.size, "data_format": self.data_format,
                "interpolation": self.interpolation}


class RepeatVector(Layer):
    """(batch, features) -> (batch, n, features): the input repeated n times."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = args.positive_int("n", n)

    def build(self, input_shape):
        _require_rank(self, input_shape, 2, "vectors (batch, features)")

    def call(self, inputs):
        steps = ops.reshape(inputs, (batch_dim(inputs), 1, inputs.shape[1]))
        if self.n > 1 and resizable(inputs, (1,)):
            return upsample_steps(steps, self.n)
        return repeat_each(steps, 1, self.n)

    def get_config(self):
        return {**super().get_config(), "n": self.n}
