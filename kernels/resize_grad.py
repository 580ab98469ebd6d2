"""Resize-gradient template: DX = resize_grad(G), the adjoint of kernels/resize.py (UpSampling2D's,
UpSampling1D's and RepeatVector's backward, and Resizing's where it trains).

resize reads each output pixel from input pixels chosen by index arithmetic alone; its gradient
adds every output pixel's gradient back into the pixels it read, with the same weights. Here each
program computes BLOCK input-gradient elements at flat NHWC indices and gathers instead of
scattering (no atomics, the same sum in every run): along each axis, the outputs that read input
row h lie in a run of at most 2 / scale + 1 (bilinear: outputs whose i0 is h - 1 or h; 2.5 / scale
for row 1, read at weight 0 left of the first centre) or 1 / scale + 1 (nearest) rows, scale =
in / out. The kernel walks a window of SPAN candidates from an estimate of the run's start, one row
before it, and for each candidate recomputes the forward's own source indices and weights
(kernels/resize.py), so the estimate only has to cover the run.

Each term is added as torch's backward adds it (aten/src/ATen/native/cpu/UpSampleKernel.cpp:
grad_in[h_i, w_j] += (lambda_h_i * lambda_w_j) * g for the four corners, even at weight 0), so a
NaN or inf gradient reaches the pixels it would in torch (0 * inf is NaN there too).
"""

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.resize import _bilinear_source, _nearest_source, checked_images
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template


@triton.jit
def _first_reader(h, scale, BILINEAR: tl.constexpr):
    """An output row at or before the first that reads input row h (one row of slack for rounding)."""
    if BILINEAR:  # rows 0 and 1 are read (row 1 at weight 0) by every output left of the first centre
        first = tl.floor((h.to(tl.float32) - 0.5) / scale - 0.5).to(tl.int32) - 1
        first = tl.where(h <= 1, 0, first)
    else:
        first = tl.floor(h.to(tl.float32) / scale - 0.5).to(tl.int32) - 1
    return tl.maximum(first, 0)


@triton.jit
def _weights(o, h, scale, size, BILINEAR: tl.constexpr):
    """(weight of output row o's first source for row h, of its second): 0 where that source is not
    h; a flag for each whether it is h (a weight-0 term still adds 0 * g, as torch's does)."""
    if BILINEAR:
        i0, i1, lam = _bilinear_source(o, scale, size)
    else:  # one source at weight 1: the second (-1) never matches
        i0 = _nearest_source(o, scale, size)
        i1 = tl.full(i0.shape, -1, tl.int32)
        lam = tl.zeros(i0.shape, tl.float32)
    return i0 == h, 1.0 - lam, i1 == h, lam


@triton.jit
def resize_grad_kernel(G, DX, total, H, W, C, OH, OW, scale_h, scale_w, SPAN_H, SPAN_W,
                       BILINEAR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    c = offs % C
    w = ((offs // C) % W).to(tl.int32)
    h = ((offs // (C * W)) % H).to(tl.int32)
    image = G + (offs // (C * W * H)) * OH * OW * C + c  # each element's gradient image, at its channel
    first_h = _first_reader(h, scale_h, BILINEAR)
    first_w = _first_reader(w, scale_w, BILINEAR)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i in range(0, SPAN_H):
        oh = first_h + i
        h0, lh0, h1, lh1 = _weights(oh, h, scale_h, H, BILINEAR)
        row = mask & (oh < OH) & (h0 | h1)
        for j in range(0, SPAN_W):
            ow = first_w + j
            w0, lw0, w1, lw1 = _weights(ow, w, scale_w, W, BILINEAR)
            read = row & (ow < OW) & (w0 | w1)
            g = tl.load(image + (oh.to(tl.int64) * OW + ow) * C, mask=read, other=0.0).to(tl.float32)
            acc += tl.where(h0 & w0, (lh0 * lw0) * g, 0.0)
            if BILINEAR:
                acc += tl.where(h0 & w1, (lh0 * lw1) * g, 0.0)
                acc += tl.where(h1 & w0, (lh1 * lw0) * g, 0.0)
                acc += tl.where(h1 & w1, (lh1 * lw1) * g, 0.0)
    tl.store(DX + offs, acc.to(DX.dtype.element_ty), mask=mask)


def span(scale: float, bilinear: bool) -> int:
    """Candidate output rows per input row: the run that reads it (bilinear: 2 / scale rows, or
    2.5 / scale from output 0 for row 1, which the outputs left of the first centre read at weight
    0; nearest: 1 / scale), plus one for where it starts, a row of slack before it and one after."""
    return math.ceil((2.5 if bilinear else 1.0) / scale) + 3


# Block sizes, as data: one flat block per program; the interpreter's wide (few programs).
def block_config(interpret: bool) -> dict:
    return dict(BLOCK=4096, num_warps=4) if interpret else dict(BLOCK=256, num_warps=4)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ResizeGradBinding(Binding):
    g: int  # which input is the gradient of the resized NHWC images
    height: int  # the resize's input height and width: the output's
    width: int
    interpolation: str  # "bilinear" or "nearest"
    out_dtype: torch.dtype


@dataclass
class ResizeGradCall(Call):
    g: torch.Tensor  # contiguous NHWC
    scale_h: float  # the forward's in / out, float32 as torch computes it
    scale_w: float


def launch(binding: ResizeGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    g, out, scale_h, scale_w = checked_images(binding, inputs, out, binding.g, forward=False)
    run(ResizeGradCall(binding, inputs, out, g, scale_h, scale_w), config, interpret)
    return out


@tuned(lambda call, interpret: [block_config(interpret)])
def run(call: ResizeGradCall, config: dict):
    b = call.binding
    total = call.out.numel()
    N, OH, OW, C = call.g.shape
    bilinear = b.interpolation == "bilinear"
    resize_grad_kernel[(max(1, cdiv(total, config["BLOCK"])),)](
        call.g, call.out, total, b.height, b.width, C, OH, OW, call.scale_h, call.scale_w,
        span(call.scale_h, bilinear), span(call.scale_w, bilinear),
        BILINEAR=bilinear, BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------


def _group(fusion, node):
    """A resize's gradient alone: the elementwise ops after it go to the kernel reading it."""
    if node.op != "resize_grad" or node.inputs[0].dtype not in FLOAT_DTYPES:
        return None
    return Group(node)


TEMPLATES = (Template("resize_grad", launch, ResizeGradBinding, group=_group, priority=63),)
