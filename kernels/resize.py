"""Resize template: Y = resize(X) for NHWC images, Keras's Resizing on its torch backend.

Each program computes BLOCK output elements at flat NHWC indices; every element decodes its
(n, oh, ow, c), finds the input pixels it reads by index arithmetic and blends them: no
matrix, no im2col, one read of each input element per output element that needs it.

The index arithmetic is torch's (aten/src/ATen/native/UpSample.h), in float32 as torch computes
it for float32 images, with scale = in / out (a float32 division):
  nearest ("nearest-exact", Keras's "nearest" on torch): src = min(floor((dst + 0.5) * scale), in - 1);
  bilinear (align_corners=False): real = max((dst + 0.5) * scale - 0.5, 0), i0 = int(real),
    i1 = i0 + (i0 < in - 1) (i0 where in == out), weight of i1 = min(max(real - i0, 0), 1), of i0 its complement;
    out = (1 - lh) * ((1 - lw) * x00 + lw * x01) + lh * ((1 - lw) * x10 + lw * x11).
Every blended pixel is loaded and multiplied, even at weight 0, so a NaN or inf among them
reaches the output as it does in torch (0 * inf is NaN there too).

Launch: `launch(binding, inputs, ...)` reads the sizes from the tensors at run time (the batch
varies); the binding says which input is the image, the output size, the interpolation and the
output dtype. The op's gradient (resize_grad) is kernels/resize_grad.py's: each input pixel
gathers the gradients of the output pixels that read it, through the index arithmetic here.
"""

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template


@triton.jit
def _bilinear_source(dst, scale, size):
    """(i0, i1, weight of i1) along one axis: torch's align_corners=False source index. An axis
    kept at its size is copied (i1 = i0, as torch's compute_source_index_and_lambda does), so a
    NaN does not reach the pixel before it through a weight of 0."""
    real = tl.maximum((dst.to(tl.float32) + 0.5) * scale - 0.5, 0.0)
    i0 = real.to(tl.int32)  # real >= 0: truncation is floor
    i1 = i0 + ((i0 < size - 1) & (scale != 1.0)).to(tl.int32)
    weight = tl.minimum(tl.maximum(real - i0.to(tl.float32), 0.0), 1.0)
    return i0, i1, weight


@triton.jit
def _nearest_source(dst, scale, size):
    """The source index along one axis: torch's "nearest-exact"."""
    return tl.minimum(tl.floor((dst.to(tl.float32) + 0.5) * scale).to(tl.int32), size - 1)


@triton.jit
def resize_kernel(X, Y, total, H, W, C, OH, OW, scale_h, scale_w, BILINEAR: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    c = offs % C
    ow = (offs // C) % OW
    oh = (offs // (C * OW)) % OH
    image = X + (offs // (C * OW * OH)) * H * W * C + c  # each element's image, at its channel
    if BILINEAR:
        h0, h1, lh = _bilinear_source(oh, scale_h, H)
        w0, w1, lw = _bilinear_source(ow, scale_w, W)
        x00 = tl.load(image + (h0 * W + w0) * C, mask=mask, other=0.0).to(tl.float32)
        x01 = tl.load(image + (h0 * W + w1) * C, mask=mask, other=0.0).to(tl.float32)
        x10 = tl.load(image + (h1 * W + w0) * C, mask=mask, other=0.0).to(tl.float32)
        x11 = tl.load(image + (h1 * W + w1) * C, mask=mask, other=0.0).to(tl.float32)
        top = (1.0 - lw) * x00 + lw * x01
        bottom = (1.0 - lw) * x10 + lw * x11
        y = (1.0 - lh) * top + lh * bottom
    else:
        sh = _nearest_source(oh, scale_h, H)
        sw = _nearest_source(ow, scale_w, W)
        y = tl.load(image + (sh * W + sw) * C, mask=mask, other=0.0)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


# Block sizes, as data: one flat block per program; the interpreter's wide (few programs).
def block_config(interpret: bool) -> dict:
    return dict(BLOCK=4096, num_warps=4) if interpret else dict(BLOCK=1024, num_warps=4)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ResizeBinding(Binding):
    x: int  # which input is the NHWC image
    height: int  # the output's
    width: int
    interpolation: str  # "bilinear" or "nearest"
    out_dtype: torch.dtype


@dataclass
class ResizeCall(Call):
    x: torch.Tensor  # contiguous NHWC
    scale_h: float  # in / out, float32 as torch computes it
    scale_w: float


def launch(binding: ResizeBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    x, out, scale_h, scale_w = checked_images(binding, inputs, out, binding.x, forward=True)
    run(ResizeCall(binding, inputs, out, x, scale_h, scale_w), config, interpret)
    return out


def checked_images(binding, inputs, out, index: int, forward: bool) -> tuple:
    """(the NHWC batch inputs[index], contiguous; the output, (N, binding.height, binding.width, C),
    allocated unless given; the forward resize's in / out along each axis, float32 divisions as
    torch's): a resize's launch (forward) or its gradient's, whose input is the resized size."""
    # check: an NHWC image batch, read contiguous
    x = inputs[index].contiguous()
    N, H, W, C = x.shape
    # allocate
    if out is None:
        out = torch.empty((N, binding.height, binding.width, C), device=x.device, dtype=binding.out_dtype)
    (H, OH), (W, OW) = ((H, binding.height), (W, binding.width)) if forward else ((binding.height, H), (binding.width, W))
    return x, out, float(np.float32(H) / np.float32(OH)), float(np.float32(W) / np.float32(OW))


@tuned(lambda call, interpret: [block_config(interpret)])
def run(call: ResizeCall, config: dict):
    b = call.binding
    total = call.out.numel()
    N, H, W, C = call.x.shape
    resize_kernel[(cdiv(total, config["BLOCK"]),)](
        call.x, call.out, total, H, W, C, b.height, b.width, call.scale_h, call.scale_w,
        BILINEAR=b.interpolation == "bilinear", BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------


def _group(fusion, node):
    """A resize alone: the elementwise ops after it go to the prologue of the conv or Dense
    reading it, or to a pointwise kernel."""
    if node.op != "resize" or node.inputs[0].dtype not in FLOAT_DTYPES:
        return None
    return Group(node)


TEMPLATES = (Template("resize", launch, ResizeBinding, group=_group, priority=62),)
