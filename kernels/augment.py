"""affine_transform template: Keras's affine resampling of NHWC images (the augmentation layers').

Each program computes BP output pixels of one row (n, y) x BC channels. A pixel's source point
comes from its image's row of the (batch, 8) transform T: x_in = (y a1 + x a0) + a2, y_in = (y b1 + x b0) + b2,
summed in the reference's order (kcomp/ir/ops/augment.py). "nearest" reads one tap (rounded half
to even, as torch.round), "bilinear" blends four, added in the reference's order (row-major
taps, each weight wy * wx times the value), so under the interpreter the bits are the
reference's. A tap outside the image reads where fill_mode says (Keras's index fixers:
clamp, wrap, reflect), or fill_value for "constant". Channels are contiguous in NHWC, so each
tap's row of the tile is one coalesced load. Computed in float32 (float64 for float64 images).

With the augment_params that draws T fused as its prologue (every geometric kind), each program
draws its image's row once, as scalars (a rotation's cos and sin too, kernels/trig.py's), and
where another op also reads T (the gradient's kernel, kernels/augment_grad.py) the first program of each image writes its row: outputs (T, images).

Launch: `launch(binding, inputs, ...)`; no hook: a generated module supplies an AffineBinding
(which inputs are the images and the transform, the mode constants, the output's size and dtype).
"""

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.augment import GEOMETRIC
from kcomp.kernels.autotune import tuned
from kcomp.kernels.random import philox_uniform
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template
from kcomp.kernels.trig import sin_cos


DEGREE = tl.constexpr(math.pi / 180.0)  # a rotation's degrees to radians, rounded to float32 as the reference's


@triton.jit
def _round_half_even(v):
    """torch.round of a float tile: to the nearest integer, ties to the even one (v - floor(v) is exact)."""
    lower = tl.floor(v)
    frac = v - lower
    odd = (lower - 2.0 * tl.floor(lower * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return tl.where(up, lower + 1.0, lower)


@triton.jit
def _floor_mod(i, n):
    """Python's (and torch.remainder's) i mod n, in [0, n): Triton's % truncates, as C's does.
    One division (a second % would cost a second, and spilled on sm_90)."""
    r = i % n
    return tl.where(r < 0, r + n, r)


@triton.jit
def _fix_index(i, size, FILL_MODE: tl.constexpr):
    """Keras's index fixers (constant only clamps, to stay in bounds; its taps outside read fill_value)."""
    if FILL_MODE == "wrap":
        return _floor_mod(i, size)
    elif FILL_MODE == "reflect":
        # mirror(2 i + 1, 2 size + 1): an odd value >= 1, halved after the - 1
        m = _floor_mod(2 * i + 1 + 2 * size, 4 * size) - 2 * size
        return (tl.abs(m) - 1) // 2
    else:
        return tl.minimum(tl.maximum(i, 0), size - 1)


@triton.jit
def _tap(X, n, iy, ix, offs_c, mask, H, W, C, fill_value, FILL_MODE: tl.constexpr, DOUBLE: tl.constexpr):
    """The (BP, BC) values of one tap: rows (iy, ix) of image n, by fill_mode."""
    fy = _fix_index(iy, H, FILL_MODE)
    fx = _fix_index(ix, W, FILL_MODE)
    ptrs = X + ((n.to(tl.int64) * H + fy) * W + fx)[:, None] * C + offs_c[None, :]
    value = tl.load(ptrs, mask=mask, other=0.0)
    value = value.to(tl.float64) if DOUBLE else value.to(tl.float32)
    if FILL_MODE == "constant":
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        value = tl.where(inside[:, None], value, fill_value)
    return value


@triton.jit
def _row_tile(OH, OW, C, BP: tl.constexpr, BC: tl.constexpr):
    """This program's output row: its index row_id = n * OH + y, image n and row y (scalars), its BP
    pixels ox and BC channels, and the (BP, BC) mask of those inside the output."""
    row_id = tl.program_id(0)
    ox = tl.program_id(1) * BP + tl.arange(0, BP)
    offs_c = tl.program_id(2) * BC + tl.arange(0, BC)
    return row_id, row_id // OH, row_id % OH, ox, offs_c, (ox < OW)[:, None] & (offs_c < C)[None, :]


@triton.jit
def _loaded_transform(T, n):
    """Image n's transform (a0, a1, a2, b0, b1, b2): its row of T (float32, float64 for float64 images)."""
    row = T + n.to(tl.int64) * 8
    return tl.load(row + 0), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3), tl.load(row + 4), tl.load(row + 5)


@triton.jit
def _store_transform(T_OUT, n, a0, a1, a2, b0, b1, b2, first):
    """Image n's row of the (batch, 8) float32 transform [a0, a1, a2, b0, b1, b2, 0, 0], where `first`."""
    row = T_OUT + n.to(tl.int64) * 8
    tl.store(row + 0, a0, mask=first)
    tl.store(row + 1, a1, mask=first)
    tl.store(row + 2, a2, mask=first)
    tl.store(row + 3, b0, mask=first)
    tl.store(row + 4, b1, mask=first)
    tl.store(row + 5, b2, mask=first)
    tl.store(row + 6, 0.0, mask=first)
    tl.store(row + 7, 0.0, mask=first)


@triton.jit
def _source_point(a0, a1, a2, b0, b1, b2, oy, ox):
    """(y_in, x_in) of output pixels (oy, ox), summed in the reference's order."""
    xf = ox.to(a0.dtype)
    yf = oy.to(a0.dtype)
    return (yf * b1 + xf * b0) + b2, (yf * a1 + xf * a0) + a2


@triton.jit
def _bilinear(y_in, x_in):
    """A bilinear blend's upper-left tap (iy, ix) and weights (wy0, wy1, wx0, wx1), as the reference's."""
    lower_y = tl.floor(y_in)
    lower_x = tl.floor(x_in)
    wy1 = y_in - lower_y
    wx1 = x_in - lower_x
    return lower_y.to(tl.int32), lower_x.to(tl.int32), 1 - wy1, wy1, 1 - wx1, wx1


@triton.jit
def _drawn(n, P: tl.constexpr, step, SEED: tl.constexpr, LOWER: tl.constexpr, SPAN: tl.constexpr):
    """Drawn value P of images n: Philox's uniform at counter n * 4 + P, times SPAN plus LOWER (float32)."""
    return philox_uniform(n.to(tl.int64) * 4 + P, step, SEED) * SPAN + LOWER


@triton.jit
def _drawn_transform(n, step, H, W, KIND: tl.constexpr, SEED: tl.constexpr, LOWER0: tl.constexpr,
                     SPAN0: tl.constexpr, LOWER1: tl.constexpr, SPAN1: tl.constexpr, SAME: tl.constexpr):
    """augment_params' transform of image n (a scalar: one program's image, so a rotation's cos and
    sin are computed once per program, not per lane), computed here as its reference computes it
    (kcomp/ir/ops/augment.py: the same float32 operations in the same order; cos and sin are
    kernels/trig.py's, not torch's: within 1.5 ulps of the exact values, torch's within 0.6)."""
    if KIND == "crop":
        n = n * 0  # one window for the whole batch: image 0's draws
    v0 = _drawn(n, 0, step, SEED, LOWER0, SPAN0)
    if SAME:
        v1 = v0
    else:
        v1 = _drawn(n, 1, step, SEED, LOWER1, SPAN1)
    zero = v0 * 0.0
    one = zero + 1.0
    width = W.to(tl.float32)
    height = H.to(tl.float32)
    if KIND == "rotation":  # v0 in degrees; radians by a float32 pi / 180, as the reference
        angle = v0 * DEGREE
        sin, cos = sin_cos(angle)  # not tl.sin/tl.cos: libdevice's slow path keeps local memory (kernels/trig.py)
        cx = (width - 1.0) * 0.5
        cy = (height - 1.0) * 0.5
        a0, a1, a2 = cos, -sin, (cx - cx * cos) - cy * -sin
        b0, b1, b2 = sin, cos, (cy - cx * sin) - cy * cos
    elif KIND == "zoom":
        a0, a1, a2 = v1, zero, (width - 1.0) / 2.0 * (one - v1)
        b0, b1, b2 = zero, v0, (height - 1.0) / 2.0 * (one - v0)
    elif KIND == "translation":
        a0, a1, a2 = one, zero, -(v1 * width)
        b0, b1, b2 = zero, one, -(v0 * height)
    elif KIND == "crop":
        a0, a1, a2 = one, zero, tl.floor(v1)
        b0, b1, b2 = zero, one, tl.floor(v0)
    else:  # the flips: one draw, both axes together
        flipped = v0 <= 0.5
        sx = one
        sy = one
        if KIND != "flip_vertical":
            sx = tl.where(flipped, -one, one)
        if KIND != "flip_horizontal":
            sy = tl.where(flipped, -one, one)
        a0, a1, a2 = sx, zero, tl.where(sx < 0, width - 1.0, 0.0)
        b0, b1, b2 = zero, sy, tl.where(sy < 0, height - 1.0, 0.0)
    return a0, a1, a2, b0, b1, b2


@triton.jit
def affine_transform_kernel(X, T, STEP, Y, T_OUT, H, W, C, OH, OW, fill_value,
                            INTERPOLATION: tl.constexpr, FILL_MODE: tl.constexpr, DOUBLE: tl.constexpr,
                            DRAWN: tl.constexpr, HAS_STEP: tl.constexpr, KIND: tl.constexpr, SEED: tl.constexpr,
                            LOWER0: tl.constexpr, SPAN0: tl.constexpr, LOWER1: tl.constexpr, SPAN1: tl.constexpr,
                            SAME: tl.constexpr, STORE_T: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    # One output row (n, y) per program along axis 0: the image and row are scalars, so the
    # transform is six scalar loads and no pixel index needs a vector division.
    row_id, n, oy, ox, offs_c, mask = _row_tile(OH, OW, C, BP, BC)
    if DRAWN:  # augment_params fused: the transform drawn here, once, from (SEED, the step, the image)
        step = tl.load(STEP) if HAS_STEP else 0.0
        a0, a1, a2, b0, b1, b2 = _drawn_transform(n, step, H, W, KIND, SEED, LOWER0, SPAN0, LOWER1, SPAN1, SAME)
        if STORE_T:  # the transform is read elsewhere too (the gradient's kernel): image n's first program writes it
            first = (oy == 0) & (tl.program_id(1) == 0) & (tl.program_id(2) == 0)
            _store_transform(T_OUT, n, a0, a1, a2, b0, b1, b2, first)
        if DOUBLE:
            a0, a1, a2, b0, b1, b2 = a0.to(tl.float64), a1.to(tl.float64), a2.to(tl.float64), \
                b0.to(tl.float64), b1.to(tl.float64), b2.to(tl.float64)
    else:  # the launch cast T to float32 (float64 for float64 images)
        a0, a1, a2, b0, b1, b2 = _loaded_transform(T, n)
    y_in, x_in = _source_point(a0, a1, a2, b0, b1, b2, oy, ox)
    n = n + ox * 0  # the image index as a tile, as _tap's addresses take it
    if INTERPOLATION == "nearest":
        iy = _round_half_even(y_in).to(tl.int32)
        ix = _round_half_even(x_in).to(tl.int32)
        out = _tap(X, n, iy, ix, offs_c, mask, H, W, C, fill_value, FILL_MODE, DOUBLE)
    else:
        iy, ix, wy0, wy1, wx0, wx1 = _bilinear(y_in, x_in)
        out = (wy0 * wx0)[:, None] * _tap(X, n, iy, ix, offs_c, mask, H, W, C, fill_value, FILL_MODE, DOUBLE)
        out = out + (wy0 * wx1)[:, None] * _tap(X, n, iy, ix + 1, offs_c, mask, H, W, C, fill_value, FILL_MODE, DOUBLE)
        out = out + (wy1 * wx0)[:, None] * _tap(X, n, iy + 1, ix, offs_c, mask, H, W, C, fill_value, FILL_MODE, DOUBLE)
        out = out + (wy1 * wx1)[:, None] * _tap(X, n, iy + 1, ix + 1, offs_c, mask, H, W, C, fill_value, FILL_MODE,
                                                DOUBLE)
    y_ptrs = Y + ((row_id.to(tl.int64) * OW + ox) * C)[:, None] + offs_c[None, :]
    tl.store(y_ptrs, out.to(Y.dtype.element_ty), mask=mask)


# Block sizes, as data: BP covers a row's pixels (up to 128), BC the channels (images have few: 1
# to 4; up to 64 when a feature map is augmented). Four taps' addresses and values are live together.
GPU_CONFIGS = [
    dict(BP=128, BC=4, num_warps=4),
    dict(BP=64, BC=16, num_warps=4),
    dict(BP=32, BC=64, num_warps=4),
]


def candidate_configs(OW: int, C: int, interpret: bool) -> list[dict]:
    """Configs whose channel block is no wider than the channels need (the narrowest if none fits);
    the interpreter's: one block per row and channels, its programs being costly there."""
    if interpret:
        return [dict(BP=min(256, next_power_of_2(OW)), BC=min(64, next_power_of_2(C)), num_warps=4)]
    width = max(4, next_power_of_2(C))
    return [c for c in GPU_CONFIGS if c["BC"] <= width] or GPU_CONFIGS[:1]


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AffineBinding(Binding):
    x: int  # which input is the NHWC image batch
    transform: int | None  # which input is the (batch, 8) transform; None: drawn in the kernel
    step: int | None  # which input is the training step (drawn transforms; None: step 0)
    kind: str  # what augment_params draws (drawn transforms)
    seed: int
    ranges: tuple  # ((lower, span), (lower, span) or None): augment_params' draw_ranges
    interpolation: str
    fill_mode: str
    fill_value: float
    output_size: tuple | None  # (height, width) of the output window, None: the input's
    out_dtype: torch.dtype
    stores_transform: bool = False  # drawn and read elsewhere too: outputs (transform, images), the kernel writes both


@dataclass(kw_only=True)
class AffineCall(Call):
    x: torch.Tensor  # contiguous
    transform: torch.Tensor  # contiguous float32 (float64 for float64 images); x when drawn (unread)
    step: torch.Tensor  # the step scalar; x when there is none (unread)
    transform_out: torch.Tensor  # the (batch, 8) float32 transform the kernel writes; x when it writes none

    @property
    def images(self) -> torch.Tensor:
        return self.out[1] if self.binding.stores_transform else self.out


def launch(binding: AffineBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: NHWC images, one row of 8 per image
    x = inputs[binding.x].contiguous()
    N, H, W, C = x.shape
    transform = x if binding.transform is None else inputs[binding.transform]
    transform = transform.to(torch.float64 if x.dtype == torch.float64 else torch.float32).contiguous()
    step = x if binding.step is None else inputs[binding.step]
    OH, OW = binding.output_size or (H, W)
    # allocate
    transform_out, images = out if binding.stores_transform and out is not None else (None, out)
    if images is None:
        images = torch.empty((N, OH, OW, C), device=x.device, dtype=binding.out_dtype)
    if binding.stores_transform and transform_out is None:
        transform_out = torch.empty((N, 8), device=x.device, dtype=torch.float32)
    out = (transform_out, images) if binding.stores_transform else images
    run(AffineCall(binding, inputs, out, x=x, transform=transform, step=step,
                   transform_out=x if transform_out is None else transform_out), config, interpret)
    return out


@tuned(lambda call, interpret: candidate_configs(call.images.shape[2], call.x.shape[3], interpret))
def run(call: AffineCall, config: dict):
    b = call.binding
    N, H, W, C = call.x.shape
    _, OH, OW, _ = call.images.shape
    (lower0, span0), second = b.ranges[0], b.ranges[-1]
    lower1, span1 = second or (0.0, 1.0)
    affine_transform_kernel[(N * OH, cdiv(OW, config["BP"]), cdiv(C, config["BC"]))](
        call.x, call.transform, call.step, call.images, call.transform_out, H, W, C, OH, OW, float(b.fill_value),
        INTERPOLATION=b.interpolation, FILL_MODE=b.fill_mode, DOUBLE=call.x.dtype == torch.float64,
        DRAWN=b.transform is None, HAS_STEP=b.step is not None, KIND=b.kind, SEED=b.seed,
        LOWER0=lower0, SPAN0=span0, LOWER1=lower1, SPAN1=span1, SAME=len(b.ranges) == 1 or second is None,
        STORE_T=b.stores_transform, BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------


# The kinds whose transform the kernel draws: every geometric one, once per program for its image
# (scalars). A rotation's cos and sin are kernels/trig.py's polynomials: libdevice's left local
# memory in the kernel under Triton 3.6 (tests/test_affine_transform_kernel.py's AOT cases, tests/test_aot.py).
DRAWN_KINDS = GEOMETRIC


def _group(fusion, node):
    """An affine_transform with the augment_params that draws its transform (the kernel draws it: no
    launch for it; where something else reads it too, the gradient's kernel, the kernel also writes
    it: an output before the images); else alone."""
    if node.op == "augment_params" and node.attrs["kind"] in DRAWN_KINDS:
        t = node.outputs[0]
        user = next((u for u in fusion.users_of(t) if u.op == "affine_transform" and u.inputs[1].id == t.id
                     and u.inputs[0].id == node.inputs[0].id and fusion.is_free(u)), None)
        if user is not None:
            return Group(user, prologue=[node])
    return Group(node) if node.op == "affine_transform" else None


TEMPLATES = (Template("affine_transform", launch, AffineBinding, group=_group, priority=57),)
