"""Pool2D backward template: dx of a max or average pool over an NHWC image.

A gather, not a scatter: each program computes BP input pixels (n, h, w) x BC
channels of dx, and visits the output windows (oh, ow) that cover its pixel.
Overlapping windows (stride < window) then add into a register, not into
memory, so there are no atomics and the sum is deterministic.

Along one axis, the windows covering row h start at oh * SH - pad_top, for oh
from (h + pad_top) // SH down, one stride at a time, while the window still
reaches h: at most cdiv(PH, SH) of them (strides are constexpr, so that count
is). Candidates outside 0 <= oh < OH (the padding of 'same', the rows a
'valid' pool never reached) are masked.

max: the forward kept no argmax, so each window's maximum is recomputed from x,
with the reference's tie rule: the FIRST position in row-major order wins
(torch's max_pool2d updates only on a strictly greater value, or a NaN), and
padded positions are -inf. The window's dy goes to dx only if that position is
this program's pixel. This reads up to cdiv(PH, SH) * cdiv(PW, SW) * PH * PW
tiles of x per tile of dx: 4 for a 2x2 stride-2 pool, 81 for 3x3 stride 1;
dy is read only where it lands.

avg: each covering window adds dy / (its count of real, unpadded pixels), as
the forward divides. Accumulation is float32.

Hook: EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0..E3, S0..S3), as in the
matmul and conv2d templates, runs on the float32 dx tile before its store (in a
training step: relu's gradient mask, dz = dx * greater(h, 0)). Rows are the
block's flat pixels (n, h, w) and columns its channels, so a "full" operand of
dx's NHWC shape is indexed with row stride C, as dx itself is.

The launch is `launch` below (check, allocate, run with a tuned config); a generated
module gives it a binding: the pool (kind, window, strides, padding), which input is
which, the epilogue hook and its operands, and dx's dtype.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.conv import pads_before
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import EPILOGUE_OPERANDS, Operand, contiguous_operands, tile_operand_args
# Block sizes: the forward pool's, the same tiling of pixels x channels. Measured by AOT for
# sm_90 with each of its GPU configs, at 2x2 stride 2, 3x3 stride 2 and 3x3 stride 1 ('same'),
# float32 and bfloat16: no spills; the max recompute takes up to 215 registers per thread at
# 32 elements of the tile per thread.
from kcomp.kernels.pool2d import candidate_configs, grid
from kcomp.kernels.template import Binding, Call, Group, Template

POOL_GRADS = {"max_pool2d_grad": "max", "avg_pool2d_grad": "avg"}  # pool gradient op -> its pool's kind (POOL)


@triton.jit
def _first_argmax(x_rows, offs_c, mask_c, covers, ih0, iw0, H, W, C,
                  PH: tl.constexpr, PW: tl.constexpr, BP: tl.constexpr, BC: tl.constexpr):
    """Row-major index (i * PW + j) of each window's first maximum, per pixel row and channel."""
    best = tl.full((BP, BC), float("-inf"), dtype=tl.float32)
    first = tl.zeros((BP, BC), dtype=tl.int32)
    for k in range(PH * PW):  # a loop, like the caller's: one tile of x in flight, not PH * PW
        ih = ih0 + k // PW
        iw = iw0 + k % PW
        inside = covers & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        ptrs = x_rows[:, None] + ((ih * W + iw) * C)[:, None] + offs_c[None, :]
        x = tl.load(ptrs, mask=inside[:, None] & mask_c[None, :], other=float("-inf")).to(tl.float32)
        # Strictly greater keeps the first of equal maxima; a NaN wins as it does in torch.
        better = (x > best) | (x != x)
        best = tl.where(better, x, best)
        first = tl.where(better, k, first)
    return first


@triton.jit
def pool2d_grad_kernel(
    X, DY, DX,
    H, W, C, OH, OW, P,
    pad_top, pad_left,
    E0, E1, E2, E3, S0, S1, S2, S3,
    EPILOGUE: tl.constexpr,
    POOL: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    BP: tl.constexpr, BC: tl.constexpr,
):
    offs_p = tl.program_id(0) * BP + tl.arange(0, BP)  # input pixels (n, h, w), flat
    offs_c = tl.program_id(1) * BC + tl.arange(0, BC)
    mask_p = offs_p < P
    mask_c = offs_c < C
    w = offs_p % W
    h = (offs_p // W) % H
    n = (offs_p // (W * H)).to(tl.int64)
    x_rows = X + n * H * W * C  # unused by avg (the launch passes dy)
    dy_rows = DY + n * OH * OW * C
    last_oh = (h + pad_top) // SH  # the last window that starts at or before h
    last_ow = (w + pad_left) // SW

    WH: tl.constexpr = (PH + SH - 1) // SH  # most windows covering one row
    WW: tl.constexpr = (PW + SW - 1) // SW
    dx = tl.zeros((BP, BC), dtype=tl.float32)
    # Loops, not unrolled: unrolled, the compiler issues every window's loads at once and spills.
    for t in range(WH * WW):
        oh = last_oh - t // WW
        ow = last_ow - t % WW
        ih0 = oh * SH - pad_top  # the window's top-left corner in the image
        iw0 = ow * SW - pad_left
        dh = h - ih0  # this pixel's place in the window (>= 0 by the choice of oh)
        dw = w - iw0
        covers = mask_p & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW) & (dh < PH) & (dw < PW)
        tile = covers[:, None] & mask_c[None, :]
        dy_ptrs = dy_rows[:, None] + ((oh * OW + ow) * C)[:, None] + offs_c[None, :]
        if POOL == "max":
            first = _first_argmax(x_rows, offs_c, mask_c, covers, ih0, iw0, H, W, C, PH, PW, BP, BC)
            mine = tile & (first == (dh * PW + dw)[:, None])
            dx += tl.load(dy_ptrs, mask=mine, other=0.0).to(tl.float32)  # read only where it lands here
        else:
            rows = tl.minimum(ih0 + PH, H) - tl.maximum(ih0, 0)
            cols = tl.minimum(iw0 + PW, W) - tl.maximum(iw0, 0)
            count = tl.maximum(rows * cols, 1).to(tl.float32)  # >= 1 where the window covers the pixel
            dx += tl.load(dy_ptrs, mask=tile, other=0.0).to(tl.float32) / count[:, None]

    dx = EPILOGUE(dx, offs_p, offs_c, mask_p, mask_c, E0, E1, E2, E3, S0, S1, S2, S3)
    dx_ptrs = DX + offs_p.to(tl.int64)[:, None] * C + offs_c[None, :]
    tl.store(dx_ptrs, dx.to(DX.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pool2DGradBinding(Binding):
    pool: str  # "max" (recomputes each window's maximum from x) or "avg" (reads dy alone)
    x: int | None  # which input is the pool's input x (N, H, W, C); None for avg, which has none
    dy: int  # which input is the pool's output gradient (N, OH, OW, C)
    input_size: tuple[int, int] | None  # avg: the image (H, W), which dy does not tell; None for max (x's)
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str  # the forward's: "valid" or "same"
    epilogue: object  # the generated @triton.jit EPILOGUE hook
    operands: tuple[Operand, ...]  # what the epilogue loads: E0..E3 with row strides S0..S3
    out_dtype: torch.dtype


@dataclass
class Pool2DGradCall(Call):
    x: torch.Tensor  # dy for avg: the kernel's X argument goes unread
    dy: torch.Tensor
    H: int
    W: int
    C: int
    OH: int
    OW: int
    P: int  # N * H * W: the input pixels, dx's rows
    pad_top: int
    pad_left: int
    epilogue_args: list  # E0..E3, S0..S3


def launch(binding: Pool2DGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: name the tensors and their (N, H, W, C) / (N, OH, OW, C) sizes.
    tensors = list(inputs)
    dy = tensors[binding.dy].contiguous()
    if binding.pool == "max":
        x = tensors[binding.x].contiguous()
        N, H, W, C = x.shape
        OH, OW = dy.shape[1], dy.shape[2]
    else:
        x = dy  # the average needs no input; the kernel's X argument goes unread
        N, OH, OW, C = dy.shape
        H, W = binding.input_size
    contiguous_operands(tensors, binding.operands)
    pad_top, pad_left = pads_before(H, W, binding.pool_size, binding.strides, (1, 1), binding.padding)
    # allocate
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=binding.out_dtype)
    call = Pool2DGradCall(
        binding, inputs, out, x=x, dy=dy, H=H, W=W, C=C, OH=OH, OW=OW, P=N * H * W,
        pad_top=pad_top, pad_left=pad_left,
        epilogue_args=tile_operand_args(tensors, binding.operands, EPILOGUE_OPERANDS, out),
    )
    run(call, config, interpret)
    return out


@tuned(lambda call, interpret: candidate_configs(call.P, call.C, interpret))
def run(call: Pool2DGradCall, config: dict):
    b = call.binding
    (ph, pw), (sh, sw) = b.pool_size, b.strides
    pool2d_grad_kernel[grid(call.P, call.C, config)](
        call.x, call.dy, call.out, call.H, call.W, call.C, call.OH, call.OW, call.P, call.pad_top, call.pad_left,
        *call.epilogue_args,
        EPILOGUE=b.epilogue, POOL=b.pool, PH=ph, PW=pw, SH=sh, SW=sw,
        BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _group(fusion, node):
    """A gather over the windows covering each pixel (no atomics); the elementwise chain after it
    (relu's gradient mask) is its epilogue, so dz is written once."""
    if node.op not in POOL_GRADS or not all(v.dtype in FLOAT_DTYPES for v in node.inputs):
        return None
    nodes = [node]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    return Group(node, epilogue=nodes[1:])


TEMPLATES = (Template("pool2d_grad", launch, Pool2DGradBinding, group=_group, priority=80),)
