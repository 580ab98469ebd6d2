"""affine_transform template: Keras's affine resampling of NHWC images (the augmentation layers').

Each program computes BP output pixels of one row (n, y) x BC channels. A pixel's source point
comes from its image's row of the (batch, 8) transform T: x_in = (y a1 + x a0) + a2, y_in = (y b1 + x b0) + b2,
summed in the reference's order (kcomp/ir/ops/augment.py). "nearest" reads one tap (rounded half
to even, as torch.round), "bilinear" blends four, added in the reference's order (row-major
taps, each weight wy * wx times the value), so under the interpreter the bits are the
reference's. A tap outside the image reads where fill_mode says (Keras's index fixers:
clamp, wrap, reflect), or fill_value for "constant". Channels are contiguous in NHWC, so each
tap's row of the tile is one coalesced load. Computed in float32 (float64 for float64 images).

Launch: `launch(binding, inputs, ...)`; no hook: a generated module supplies an AffineBinding
(which inputs are the images and the transform, the mode constants, the output's size and dtype).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template


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
def affine_transform_kernel(X, T, Y, H, W, C, OH, OW, fill_value,
                            INTERPOLATION: tl.constexpr, FILL_MODE: tl.constexpr, DOUBLE: tl.constexpr,
                            BP: tl.constexpr, BC: tl.constexpr):
    # One output row (n, y) per program along axis 0: the image and row are scalars, so the
    # transform is six scalar loads and no pixel index needs a vector division.
    row_id = tl.program_id(0)
    n = row_id // OH
    oy = row_id % OH
    ox = tl.program_id(1) * BP + tl.arange(0, BP)
    offs_c = tl.program_id(2) * BC + tl.arange(0, BC)
    mask = (ox < OW)[:, None] & (offs_c < C)[None, :]
    row = T + n.to(tl.int64) * 8  # float32, float64 for float64 images (the launch casts it)
    a0, a1, a2 = tl.load(row + 0), tl.load(row + 1), tl.load(row + 2)
    b0, b1, b2 = tl.load(row + 3), tl.load(row + 4), tl.load(row + 5)
    xf = ox.to(a0.dtype)
    yf = oy.to(a0.dtype)
    y_in = (yf * b1 + xf * b0) + b2
    x_in = (yf * a1 + xf * a0) + a2
    n = n + ox * 0  # the image index as a tile, as _tap's addresses take it
    if INTERPOLATION == "nearest":
        iy = _round_half_even(y_in).to(tl.int32)
        ix = _round_half_even(x_in).to(tl.int32)
        out = _tap(X, n, iy, ix, offs_c, mask, H, W, C, fill_value, FILL_MODE, DOUBLE)
    else:
        lower_y = tl.floor(y_in)
        lower_x = tl.floor(x_in)
        wy1 = y_in - lower_y
        wx1 = x_in - lower_x
        wy0 = 1 - wy1
        wx0 = 1 - wx1
        iy = lower_y.to(tl.int32)
        ix = lower_x.to(tl.int32)
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
    transform: int  # which input is the (batch, 8) transform
    interpolation: str
    fill_mode: str
    fill_value: float
    output_size: tuple | None  # (height, width) of the output window, None: the input's
    out_dtype: torch.dtype


@dataclass(kw_only=True)
class AffineCall(Call):
    x: torch.Tensor  # contiguous
    transform: torch.Tensor  # contiguous float32 (float64 for float64 images)


def launch(binding: AffineBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: NHWC images, one row of 8 per image
    x = inputs[binding.x].contiguous()
    N, H, W, C = x.shape
    transform = inputs[binding.transform].to(torch.float64 if x.dtype == torch.float64 else torch.float32).contiguous()
    OH, OW = binding.output_size or (H, W)
    # allocate
    if out is None:
        out = torch.empty((N, OH, OW, C), device=x.device, dtype=binding.out_dtype)
    run(AffineCall(binding, inputs, out, x=x, transform=transform), config, interpret)
    return out


@tuned(lambda call, interpret: candidate_configs(call.out.shape[2], call.x.shape[3], interpret))
def run(call: AffineCall, config: dict):
    b = call.binding
    N, H, W, C = call.x.shape
    _, OH, OW, _ = call.out.shape
    affine_transform_kernel[(N * OH, cdiv(OW, config["BP"]), cdiv(C, config["BC"]))](
        call.x, call.transform, call.out, H, W, C, OH, OW, float(b.fill_value),
        INTERPOLATION=b.interpolation, FILL_MODE=b.fill_mode, DOUBLE=call.x.dtype == torch.float64,
        BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------


def _group(fusion, node):
    """An affine_transform alone: its transform (drawn per image by augment_params) is an input."""
    return Group(node) if node.op == "affine_transform" else None


TEMPLATES = (Template("affine_transform", launch, AffineBinding, group=_group, priority=57),)
