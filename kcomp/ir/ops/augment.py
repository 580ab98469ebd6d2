"""Image augmentation ops: per-image random parameters, and Keras's affine resampling.

Keras's augmentation layers (RandomFlip, RandomRotation, RandomZoom, RandomTranslation,
RandomCrop, RandomContrast, RandomBrightness) draw parameters per image, then either resample
the image through a 2x3 inverse map (keras.ops.image.affine_transform) or apply a per-image
scalar. kcomp splits them in the same two steps, so one resampling op (and one kernel) serves
every geometric layer:

  augment_params(x[, step])      the drawn parameters: a (batch, 8) Keras transform
                                 [a0, a1, a2, b0, b1, b2, 0, 0] for the geometric kinds, a
                                 (batch, 1, 1, 1) contrast factor.
                                 Uniform u[b, p] = Philox of (seed; counter b * 4 + p, step)
                                 (kcomp/random.py's uniform_at): no host round trip, the same
                                 bits on every executor, a new draw every training step.
  random_contrast(x, mean[, step]), random_brightness(x[, step])
                                 RandomContrast's (x - mean) * factor + mean and RandomBrightness's
                                 x + delta, elementwise, each image's factor or delta drawn as
                                 augment_params draws it (u[b, 0]), so a pointwise kernel draws it
                                 inline from the flat index // image_size.
  affine_transform(x, transform) Keras's affine_transform on NHWC images: output pixel (y, x)
                                 reads the input at x_in = a0 x + a1 y + a2, y_in = b0 x + b1 y + b2,
                                 "nearest" (round half to even) or "bilinear", outside points by
                                 fill_mode ("constant" with fill_value, "nearest", "wrap",
                                 "reflect": d c b a | a b c d | d c b a), as Keras's torch backend's
                                 map_coordinates; `output_size` crops (RandomCrop's window).
  affine_transform_grad          its gradient w.r.t. the image (a scatter-add of the taps).

Keras also interpolates the channel axis with weight 0 on channel c + 1, so a NaN in channel
c + 1 spreads into channel c there; kcomp reads channel c alone (NaN stays in its own channel).
"""

import math

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.ops.common import NUMBER, require_float, require_rank
from kcomp.ir.ops.grad_support import reduce_to_shape, scalar
from kcomp.ir.lowering import literal
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.types import TensorSpec
from kcomp.random import uniform_at

PARAMS_PER_IMAGE = 4  # image b's p-th uniform is at index b * 4 + p: word p of Philox's call b (kcomp/random.py)
GEOMETRIC = ("rotation", "zoom", "translation", "flip_horizontal", "flip_vertical", "flip_horizontal_and_vertical", "crop")
SCALAR = ("contrast",)
FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("nearest", "bilinear")
# What `factor` holds for each kind (the layer turns Keras's arguments into these):
#   rotation (lower, upper) fractions of 2 pi; zoom (h_lower, h_upper[, w_lower, w_upper]) with no
#   width pair meaning the height draw for both; translation (h_lower, h_upper, w_lower, w_upper)
#   fractions of the size; crop (height, width); contrast (lower, upper) of Keras's factor, drawn
#   in [1 - lower, 1 + upper]; flips none. random_brightness: (lower, upper, value range width).


def image_uniforms(batch, count: int, seed: int, step, device) -> torch.Tensor:
    """(batch, count) float32 uniforms in [0, 1): image b's p-th at counter b * PARAMS_PER_IMAGE + p."""
    index = torch.arange(batch, dtype=torch.int64, device=device)[:, None] * PARAMS_PER_IMAGE
    return uniform_at(index + torch.arange(count, dtype=torch.int64, device=device), seed, step)


def draw_ranges(kind: str, factor: tuple, height: int, width: int) -> tuple:
    """(lower, span) of each drawn value of `kind`, host doubles: value p = u_p * span + lower in
    float32, as Keras's torch backend's uniform (u * (maxval - minval) + minval). None: the value
    is the previous one (a zoom without width_factor zooms both axes by the height's draw). The
    kernel (kernels/augment.py) takes these as constants, so both compute the same float32 ops."""
    def pair(lower, upper):
        return (lower, upper - lower)
    if kind == "rotation":  # degrees
        return (pair(factor[0] * 360.0, factor[1] * 360.0),)
    if kind == "zoom":
        return (pair(1.0 + factor[0], 1.0 + factor[1]), pair(1.0 + factor[2], 1.0 + factor[3]) if len(factor) == 4 else None)
    if kind == "translation":  # fractions of the height, then of the width
        return (pair(factor[0], factor[1]), pair(factor[2], factor[3]))
    if kind == "crop":  # Keras: uniform in [0, size - crop + 1), truncated to an int
        return ((0.0, float(height - factor[0] + 1)), (0.0, float(width - factor[1] + 1)))
    if kind == "contrast":
        return (pair(1.0 - factor[0], 1.0 + factor[1]),)
    if kind == "brightness":  # random_brightness's draw (the value range's width is factor[2])
        return (pair(factor[0], factor[1]),)
    return ((0.0, 1.0),)  # the flips: the uniform itself


def _matrix(a0, a1, a2, b0, b1, b2):
    zero = torch.zeros_like(a0)
    return torch.stack([a0, a1, a2, b0, b1, b2, zero, zero], dim=1)


def _rotation(v, factor, height, width):
    # Keras's _compute_affine_matrix with scale 1, no shear or translation, centre (0.5, 0.5):
    # the angle in degrees, then radians by a float32 pi / 180.
    angle = v[0] * torch.tensor(math.pi / 180.0, dtype=torch.float32)
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = 0.5 * (width - 1), 0.5 * (height - 1)
    return _matrix(cos, -sin, cx - cx * cos - cy * -sin, sin, cos, cy - cx * sin - cy * cos)


def _zoom(v, factor, height, width):
    zoom_h, zoom_w = v
    one, zero = torch.ones_like(zoom_h), torch.zeros_like(zoom_h)
    return _matrix(zoom_w, zero, (width - 1.0) / 2.0 * (one - zoom_w), zero, zoom_h, (height - 1.0) / 2.0 * (one - zoom_h))


def _translation(v, factor, height, width):
    dy, dx = v[0] * height, v[1] * width
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    return _matrix(one, zero, -dx, zero, one, -dy)


def _flip(axes):
    def flip(v, factor, height, width):
        # Keras: one draw per image, flipped where it is <= 0.5; both axes flip together.
        flipped = v[0] <= 0.5
        one, zero = torch.ones_like(v[0]), torch.zeros_like(v[0])
        sx = torch.where(flipped, -one, one) if "x" in axes else one
        sy = torch.where(flipped, -one, one) if "y" in axes else one
        return _matrix(sx, zero, torch.where(sx < 0, width - 1.0, 0.0), zero, sy, torch.where(sy < 0, height - 1.0, 0.0))
    return flip


def _crop(v, factor, height, width):
    # Keras draws one offset for the whole batch (shape ()): image 0's draws serve every image.
    top, left = torch.floor(v[0][:1]).expand_as(v[0]), torch.floor(v[1][:1]).expand_as(v[0])
    one, zero = torch.ones_like(top), torch.zeros_like(top)
    return _matrix(one, zero, left, zero, one, top)


def _contrast(v, factor, height, width):
    return v[0]


KINDS = {
    "rotation": _rotation, "zoom": _zoom, "translation": _translation, "crop": _crop,
    "flip_horizontal": _flip("x"), "flip_vertical": _flip("y"), "flip_horizontal_and_vertical": _flip("xy"),
    "contrast": _contrast,
}


def _require_scalar_step(inputs, op):
    if len(inputs) == 2 and inputs[1].shape != ():
        raise ShapeError(f"{op}: the step input must be a scalar, received shape {inputs[1].shape}.")


def _params_infer(inputs, kind, factor, seed):
    x = inputs[0]
    require_rank(x, 4, f"augment_params ({kind})")
    _require_scalar_step(inputs, "augment_params")
    if kind in SCALAR:
        return [TensorSpec((x.shape[0], 1, 1, 1), "float32")]
    if not (isinstance(x.shape[1], int) and isinstance(x.shape[2], int)):
        raise ShapeError(f"augment_params ({kind}) needs the image height and width known, received shape "
                         f"{format_shape(x.shape)}.")
    return [TensorSpec((x.shape[0], 8), "float32")]


def _params(x, *step, kind, factor, seed):
    ranges = draw_ranges(kind, factor, x.shape[1], x.shape[2])
    u = image_uniforms(x.shape[0], len(ranges), seed, step[0] if step else None, x.device)
    values = []
    for p, drawn in enumerate(ranges):
        values.append(values[-1] if drawn is None else u[:, p] * drawn[1] + drawn[0])
    out = KINDS[kind](values, factor, x.shape[1], x.shape[2])
    return out.reshape(-1, 1, 1, 1) if kind in SCALAR else out


# --- affine_transform ------------------------------------------------------------------------------------


def fix_index(index, size: int, fill_mode: str):
    """Keras's _INDEX_FIXERS: where an out-of-range tap reads (constant reads nothing there; its
    index is clipped only to stay in bounds)."""
    if fill_mode in ("constant", "nearest"):
        return index.clamp(0, size - 1)
    if fill_mode == "wrap":
        return torch.remainder(index, size)
    s = 2 * size  # reflect: mirror(2 i + 1, 2 size + 1), halved; the mirror's half wavelength is 2 size
    mirrored = torch.abs(torch.remainder(2 * index + 1 + s, 2 * s) - s)
    return torch.div(mirrored - 1, 2, rounding_mode="floor")


def axis_taps(coordinate, interpolation):
    """Keras's 1-D interpolation nodes: [(index, weight)], one (nearest) or two (bilinear)."""
    if interpolation == "nearest":
        return [(torch.round(coordinate).to(torch.int64), None)]
    lower = torch.floor(coordinate)
    upper_weight = coordinate - lower
    index = lower.to(torch.int64)
    return [(index, 1 - upper_weight), (index + 1, upper_weight)]


def source_coordinates(transform, out_h: int, out_w: int):
    """(y_in, x_in) of every output pixel, (batch, out_h, out_w), in the transform's dtype."""
    t = transform[:, :, None, None]
    y = torch.arange(out_h, dtype=transform.dtype, device=transform.device)[:, None]
    x = torch.arange(out_w, dtype=transform.dtype, device=transform.device)[None, :]
    # Keras: the einsum of (y, x, c) with the swapped matrix, then the offset: y b1 + x b0 + b2.
    return (y * t[:, 4] + x * t[:, 3]) + t[:, 5], (y * t[:, 1] + x * t[:, 0]) + t[:, 2]


def _brightness_infer(inputs, factor, seed, image_size):
    x = inputs[0]
    require_float(x, "random_brightness")
    _require_scalar_step(inputs, "random_brightness")
    if all(isinstance(d, int) for d in x.shape[1:]) and math.prod(x.shape[1:]) != image_size:
        raise ShapeError(f"random_brightness: image_size={image_size} but images of shape {format_shape(x.shape)}.")
    return [x]


def image_draws(kind: str, batch, factor, seed, step, device) -> torch.Tensor:
    """(batch,) float32: each image's one draw of `kind` (contrast, brightness), Philox at counter
    image * 4 onto draw_ranges' [lower, lower + span), as augment_params draws it."""
    ((lower, span),) = draw_ranges(kind, factor, 0, 0)
    return image_uniforms(batch, 1, seed, step, device)[:, 0] * span + lower


def draw_expression(kind: str, factor, seed, image_size, step: str) -> str:
    """image_draws as a generated kernel computes it: image b's elements are the flat indices
    [b * image_size, (b + 1) * image_size) of the output (`offs`, codegen/expr.py), its draw Philox
    at counter b * 4 at this step, as the reference's."""
    ((lower, span),) = draw_ranges(kind, factor, 0, 0)
    u = f"rng.philox_uniform((offs // {image_size}) * 4, {step}, SEED={seed & (2**64 - 1)})"
    return f"({u} * {literal(span)} + {literal(lower)})"


def _brightness_delta(batch, factor, seed, step, device):
    """Each image's delta: its draw (Philox at counter image * 4) in [lower, upper), times the width."""
    return image_draws("brightness", batch, factor, seed, step, device) * factor[2]


def _random_brightness(x, *step, factor, seed, image_size):
    delta = _brightness_delta(x.shape[0], factor, seed, step[0] if step else None, x.device)
    compute = torch.promote_types(x.dtype, torch.float32)
    return (x.to(compute) + delta.to(compute).reshape(-1, *([1] * (x.dim() - 1)))).to(x.dtype)


def _brightness_lowering(args, factor, seed, image_size):
    step = args[1] if len(args) > 1 else "0.0"
    return f"({args[0]} + {draw_expression('brightness', factor[:2], seed, image_size, step)} * {literal(factor[2])})"


def _contrast_infer(inputs, factor, seed, image_size):
    x, mean = inputs[:2]
    require_float(x, "random_contrast")
    _require_scalar_step(inputs[1:], "random_contrast")
    if mean.rank > x.rank or any(m not in (1, d) for m, d in zip(mean.shape[::-1], x.shape[::-1])):
        raise ShapeError(f"random_contrast: the mean {format_shape(mean.shape)} must broadcast against the images "
                         f"{format_shape(x.shape)} (one value per image and channel, or fewer).")
    if all(isinstance(d, int) for d in x.shape[1:]) and math.prod(x.shape[1:]) != image_size:
        raise ShapeError(f"random_contrast: image_size={image_size} but images of shape {format_shape(x.shape)}.")
    return [x]


def _random_contrast(x, mean, *step, factor, seed, image_size):
    # Keras's (x - mean) * factor + mean, the factor in x's dtype as the layer computed it before.
    f = image_draws("contrast", x.shape[0], factor, seed, step[0] if step else None, x.device)
    return (x - mean) * f.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) + mean


def _contrast_lowering(args, factor, seed, image_size):
    step = args[2] if len(args) > 2 else "0.0"
    return f"(({args[0]} - {args[1]}) * {draw_expression('contrast', factor, seed, image_size, step)} + {args[1]})"


def _contrast_vjp(b, node, grads):
    """d/dx = factor dy: the op itself on dy with a zero mean (the same draws: same seed and step);
    d/dmean = (1 - factor) dy = dy - d/dx, summed to the mean's shape."""
    (dy,) = grads
    x, mean, *step = node.inputs
    dx = b.emit1("random_contrast", [dy, scalar(b, 0.0, dy.dtype), *step], **node.attrs)
    return [dx, reduce_to_shape(b, b.emit1("sub", [dy, dx]), mean.shape)] + [None] * len(step)


def _affine_infer(inputs, interpolation, fill_mode, fill_value, output_size):
    x, transform = inputs
    require_rank(x, 4, "affine_transform")
    require_float(x, "affine_transform")
    if transform.rank != 2 or transform.shape[1] != 8 or transform.shape[0] != x.shape[0]:
        raise ShapeError(f"affine_transform: the transform must be (batch, 8) for images {format_shape(x.shape)}, "
                         f"received {format_shape(transform.shape)}.")
    if output_size is None:
        return [x]
    return [TensorSpec((x.shape[0], *output_size, x.shape[3]), x.dtype)]


def _taps(transform, in_h, in_w, out_h, out_w, interpolation, fill_mode):
    """Every (batch, out_h, out_w) tap: (row index, column index, weight or None, inside)."""
    y_in, x_in = source_coordinates(transform, out_h, out_w)
    taps = []
    for iy, wy in axis_taps(y_in, interpolation):
        for ix, wx in axis_taps(x_in, interpolation):
            inside = (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
            weight = None if wy is None else wy * wx
            taps.append((fix_index(iy, in_h, fill_mode), fix_index(ix, in_w, fill_mode), weight, inside))
    return taps


def _affine_transform(x, transform, *, interpolation, fill_mode, fill_value, output_size):
    batch, in_h, in_w, _ = x.shape
    out_h, out_w = output_size or (in_h, in_w)
    compute = torch.promote_types(x.dtype, torch.float32)
    b = torch.arange(batch, device=x.device)[:, None, None]
    out = None
    for iy, ix, weight, inside in _taps(transform.to(compute), in_h, in_w, out_h, out_w, interpolation, fill_mode):
        value = x[b, iy, ix].to(compute)
        if fill_mode == "constant":
            value = torch.where(inside[..., None], value, torch.tensor(fill_value, dtype=compute, device=x.device))
        term = value if weight is None else weight[..., None] * value
        out = term if out is None else out + term
    return out.to(x.dtype)


def _affine_grad_infer(inputs, interpolation, fill_mode, fill_value, input_size):
    dy, transform = inputs
    return [TensorSpec((dy.shape[0], *input_size, dy.shape[3]), dy.dtype)]


def _affine_transform_grad(dy, transform, *, interpolation, fill_mode, fill_value, input_size):
    batch, out_h, out_w, channels = dy.shape
    in_h, in_w = input_size
    compute = torch.promote_types(dy.dtype, torch.float32)
    dx = torch.zeros((batch, in_h, in_w, channels), dtype=compute, device=dy.device)
    b = torch.arange(batch, device=dy.device)[:, None, None].expand(batch, out_h, out_w)
    for iy, ix, weight, inside in _taps(transform.to(compute), in_h, in_w, out_h, out_w, interpolation, fill_mode):
        term = dy.to(compute) if weight is None else weight[..., None] * dy.to(compute)
        if fill_mode == "constant":  # a filled tap reads no pixel
            term = torch.where(inside[..., None], term, 0.0)
        dx.index_put_((b, iy, ix), term, accumulate=True)
    return dx.to(dy.dtype)


def _affine_vjp(b, node, grads):
    (dy,) = grads
    x, transform = node.inputs
    a = dict(node.attrs)
    del a["output_size"]
    dx = b.emit1("affine_transform_grad", [dy, transform], input_size=(x.shape[1], x.shape[2]), **a)
    return [dx, None]  # the transform is drawn, not learned: no gradient flows into it


RESAMPLE_ATTRS = {
    "interpolation": attr(str, "bilinear", choices=INTERPOLATIONS),
    "fill_mode": attr(str, "constant", choices=FILL_MODES),
    "fill_value": attr(NUMBER, 0.0),
}

OPS = [
    OpDef(
        name="augment_params",
        doc="Per-image random parameters of an augmentation layer (`kind`): a (batch, 8) Keras transform, or "
        "a (batch, 1, 1, 1) contrast factor / brightness delta; uniform p of image b is Philox of (`seed`; "
        "b * 4 + p, the optional step input) (kcomp/random.py), so every step draws anew, reproducibly.",
        num_inputs=(1, 2),
        attrs={"kind": attr(str, choices=tuple(KINDS)), "factor": attr(tuple, (), items=NUMBER), "seed": attr(int, 0)},
        infer=_params_infer,
        reference=_params,
        # The draws read only x's shape, not its values: no gradient flows through them (a
        # RandomContrast after a trainable layer differentiates its images, not its factors).
        vjp=lambda b, node, grads: [None] * len(node.inputs),
        traits={"random"},
    ),
    OpDef(
        name="random_brightness",
        doc="x plus a delta per image (x's first axis, image_size elements each): Philox's uniform of (`seed`; "
        "image * 4, the optional step input) onto [factor[0], factor[1]), times factor[2] (the value range's "
        "width); elementwise, so a generated kernel draws it inline.",
        num_inputs=(1, 2),
        attrs={"factor": attr(tuple, items=NUMBER), "seed": attr(int, 0), "image_size": attr(int)},
        infer=_brightness_infer,
        reference=_random_brightness,
        vjp=lambda b, node, grads: [grads[0]] + [None] * (len(node.inputs) - 1),  # a shift: dx = dy
        traits={"random", "elementwise", "unary"},
        lowering=_brightness_lowering,
    ),
    OpDef(
        name="random_contrast",
        doc="Keras's RandomContrast arithmetic (x - mean) * factor + mean, the factor drawn per image (x's first "
        "axis, image_size elements each) as augment_params' contrast draws it (Philox of (`seed`; image * 4, the "
        "optional step input) onto [1 - factor[0], 1 + factor[1])); elementwise against the (batch, 1, 1, C) mean, "
        "so a generated kernel draws it inline.",
        num_inputs=(2, 3),
        attrs={"factor": attr(tuple, items=NUMBER), "seed": attr(int, 0), "image_size": attr(int)},
        infer=_contrast_infer,
        reference=_random_contrast,
        vjp=_contrast_vjp,
        traits={"random", "elementwise"},
        lowering=_contrast_lowering,
    ),
    OpDef(
        name="affine_transform",
        doc="keras.ops.image.affine_transform of NHWC images by a (batch, 8) transform (output (y, x) reads "
        "the input at (b0 x + b1 y + b2, a0 x + a1 y + a2)), nearest or bilinear, outside points by fill_mode; "
        "`output_size` (height, width) keeps only the output's top-left window of that size.",
        num_inputs=(2, 2),
        attrs={**RESAMPLE_ATTRS, "output_size": attr(tuple, None, items=int)},
        infer=_affine_infer,
        reference=_affine_transform,
        vjp=_affine_vjp,
        traits={"gather"},
    ),
    OpDef(
        name="affine_transform_grad",
        doc="affine_transform's gradient w.r.t. the image: each output gradient added, times its tap's "
        "weight, into the input pixel the tap read (constant fill taps read none); input_size (height, width).",
        num_inputs=(2, 2),
        attrs={**RESAMPLE_ATTRS, "input_size": attr(tuple, items=int)},
        infer=_affine_grad_infer,
        reference=_affine_transform_grad,
        traits={"gather"},
    ),
]
