"""affine_transform_grad template: the gradient of Keras's affine resampling w.r.t. the images.

The forward (kernels/augment.py) reads each output pixel from one tap ("nearest") or four
("bilinear") of its image; its gradient adds each output gradient, times that tap's weight,
into the input pixel the tap read (a constant fill's taps outside the image read no pixel and
add nothing). Each program takes BP output-gradient pixels of one row (n, y) x BC channels, as
the forward's programs do, finds the same taps (the forward's index fixers and rounding), and
adds its terms with atomic adds into dx, zeroed first; an input pixel is read by several output
pixels (a zoom in, a reflect or a clamp fold), so the adds meet there.

Why atomics: a gather from the input pixel's side needs the taps that reach it, which a general
affine map with reflect / wrap / clamp folds does not bound (a "nearest" fill clamps every
point outside onto the border: a border pixel's gradient sums a whole region). Float atomics
add a pixel's terms in the order the threads arrive, so on a GPU two runs can differ in the last
bits (Triton's interpreter runs programs one by one: the same bits every run). Terms are added
in float32 (float64 for float64 images); a float16 / bfloat16 gradient is summed in a float32
buffer and rounded once at the end.

Launch: `launch(binding, inputs, ...)`; no hook: a generated module supplies an AffineGradBinding
(which inputs are the output gradient and the transform, the modes, the input size and dtype).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.kernels.augment import (
    _bilinear, _fix_index, _loaded_transform, _round_half_even, _row_tile, _source_point, candidate_configs,
)
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template


@triton.jit
def _scatter(DX, n, iy, ix, term, offs_c, mask, H, W, C, FILL_MODE: tl.constexpr):
    """Add the (BP, BC) terms into the pixels (iy, ix) of image n, as the forward's _tap reads them."""
    fy = _fix_index(iy, H, FILL_MODE)
    fx = _fix_index(ix, W, FILL_MODE)
    if FILL_MODE == "constant":  # a tap outside the image read fill_value, no pixel
        mask = mask & ((iy >= 0) & (iy < H) & (ix >= 0) & (ix < W))[:, None]
    ptrs = DX + ((n.to(tl.int64) * H + fy) * W + fx)[:, None] * C + offs_c[None, :]
    tl.atomic_add(ptrs, term, mask=mask, sem="relaxed")


@triton.jit
def affine_transform_grad_kernel(DY, T, DX, H, W, C, OH, OW, INTERPOLATION: tl.constexpr,
                                 FILL_MODE: tl.constexpr, DOUBLE: tl.constexpr, BP: tl.constexpr,
                                 BC: tl.constexpr):
    # One output-gradient row (n, y) per program along axis 0, as the forward: scalar image and row.
    row_id, n, oy, ox, offs_c, mask = _row_tile(OH, OW, C, BP, BC)
    a0, a1, a2, b0, b1, b2 = _loaded_transform(T, n)  # float32, float64 for float64 images (the launch casts it)
    y_in, x_in = _source_point(a0, a1, a2, b0, b1, b2, oy, ox)
    dy = tl.load(DY + ((row_id.to(tl.int64) * OW + ox) * C)[:, None] + offs_c[None, :], mask=mask, other=0.0)
    dy = dy.to(tl.float64) if DOUBLE else dy.to(tl.float32)
    n = n + ox * 0  # the image index as a tile, as _scatter's addresses take it
    if INTERPOLATION == "nearest":
        iy = _round_half_even(y_in).to(tl.int32)
        ix = _round_half_even(x_in).to(tl.int32)
        _scatter(DX, n, iy, ix, dy, offs_c, mask, H, W, C, FILL_MODE)
    else:
        iy, ix, wy0, wy1, wx0, wx1 = _bilinear(y_in, x_in)
        _scatter(DX, n, iy, ix, (wy0 * wx0)[:, None] * dy, offs_c, mask, H, W, C, FILL_MODE)
        _scatter(DX, n, iy, ix + 1, (wy0 * wx1)[:, None] * dy, offs_c, mask, H, W, C, FILL_MODE)
        _scatter(DX, n, iy + 1, ix, (wy1 * wx0)[:, None] * dy, offs_c, mask, H, W, C, FILL_MODE)
        _scatter(DX, n, iy + 1, ix + 1, (wy1 * wx1)[:, None] * dy, offs_c, mask, H, W, C, FILL_MODE)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AffineGradBinding(Binding):
    dy: int  # which input is the NHWC output gradient
    transform: int  # which input is the (batch, 8) transform
    interpolation: str
    fill_mode: str
    input_size: tuple  # (height, width) of the images (dx)
    out_dtype: torch.dtype


@dataclass(kw_only=True)
class AffineGradCall(Call):
    dy: torch.Tensor  # contiguous
    transform: torch.Tensor  # contiguous float32 (float64 for float64 images)
    sums: torch.Tensor  # zeroed float32 / float64 buffer the atomics add into: out itself where its dtype is that


def launch(binding: AffineGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: NHWC gradients, one row of 8 per image
    dy = inputs[binding.dy].contiguous()
    N, OH, OW, C = dy.shape
    compute = torch.float64 if dy.dtype == torch.float64 else torch.float32
    transform = inputs[binding.transform].to(compute).contiguous()
    H, W = binding.input_size
    # allocate: the sums where the atomics add (out itself where it has the compute dtype)
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=binding.out_dtype)
    direct = out.dtype == compute and out.is_contiguous()
    sums = out if direct else torch.empty((N, H, W, C), device=dy.device, dtype=compute)
    run(AffineGradCall(binding, inputs, out, dy=dy, transform=transform, sums=sums), config, interpret)
    if sums is not out:
        out.copy_(sums)  # float16 / bfloat16: rounded once, after every term is in
    return out


@tuned(lambda call, interpret: candidate_configs(call.dy.shape[2], call.dy.shape[3], interpret))
def run(call: AffineGradCall, config: dict):
    b = call.binding
    N, OH, OW, C = call.dy.shape
    H, W = b.input_size
    call.sums.zero_()  # in every run: autotuning's timing runs add into the same buffer
    affine_transform_grad_kernel[(N * OH, cdiv(OW, config["BP"]), cdiv(C, config["BC"]))](
        call.dy, call.transform, call.sums, H, W, C, OH, OW,
        INTERPOLATION=b.interpolation, FILL_MODE=b.fill_mode, DOUBLE=call.dy.dtype == torch.float64,
        BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )


def _group(fusion, node):
    """An affine_transform_grad alone (its transform is an input)."""
    return Group(node) if node.op == "affine_transform_grad" else None


TEMPLATES = (Template("affine_transform_grad", launch, AffineGradBinding, group=_group, priority=58),)
