"""Pool2D template: max or average pooling of an NHWC image, 'valid' or 'same'.

What the fusion pass emits for pools it could not absorb into a conv (a
'same' pool, a pool after something other than a conv). Each program computes
BP output pixels (n, oh, ow) x BC channels; channels are contiguous in NHWC,
so a row of the tile is one coalesced load. The PH x PW window is unrolled
(constexpr), and pixels outside the image (Keras's 'same' padding, pad_top and
pad_left from kcomp.ir.ops.conv.same_padding) are skipped: max ignores them
(-inf), average divides by the count of real pixels in each window, as Keras
does. Accumulation is float32.

Launch: `launch(binding, inputs, ...)` below reads image sizes from the input
at run time; there is no hook, a generated module supplies only a Pool2DBinding
(which input is the image, the pool's kind, window, strides and padding, and the output dtype).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.conv import sliding_window
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template

POOLS = {"max_pool2d": "max", "avg_pool2d": "avg"}  # pool op -> its kind (POOL here and in conv2d's fused pool)


@triton.jit
def pool2d_kernel(
    X, Y,
    H, W, C, OH, OW, P,
    stride_h, stride_w, pad_top, pad_left,
    POOL: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr,
    BP: tl.constexpr, BC: tl.constexpr,
):
    offs_p = tl.program_id(0) * BP + tl.arange(0, BP)  # output pixels (n, oh, ow), flat
    offs_c = tl.program_id(1) * BC + tl.arange(0, BC)
    mask_p = offs_p < P
    mask_c = offs_c < C
    ow = offs_p % OW
    oh = (offs_p // OW) % OH
    n = offs_p // (OW * OH)
    ih0 = oh * stride_h - pad_top
    iw0 = ow * stride_w - pad_left
    x_rows = X + n.to(tl.int64) * H * W * C

    if POOL == "max":
        y = tl.full((BP, BC), float("-inf"), dtype=tl.float32)
    else:
        y = tl.zeros((BP, BC), dtype=tl.float32)
    count = tl.zeros((BP,), dtype=tl.float32)  # real pixels in each window
    for i in tl.static_range(PH):
        for j in tl.static_range(PW):
            ih = ih0 + i
            iw = iw0 + j
            inside = mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            ptrs = x_rows[:, None] + ((ih * W + iw) * C)[:, None] + offs_c[None, :]
            mask = inside[:, None] & mask_c[None, :]
            if POOL == "max":
                x = tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32)
                y = tl.maximum(y, x, propagate_nan=tl.PropagateNan.ALL)  # a NaN in the window wins, as in torch
            else:
                x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
                y += x
            count += inside.to(tl.float32)
    if POOL == "avg":
        y = y / tl.maximum(count, 1.0)[:, None]  # rows past P count 0 and are not stored

    y_ptrs = Y + offs_p.to(tl.int64)[:, None] * C + offs_c[None, :]
    tl.store(y_ptrs, y.to(Y.dtype.element_ty), mask=mask_p[:, None] & mask_c[None, :])


# Block sizes, as data: BC covers the channels (up to 128), BP the pixels. At most
# 32 elements of the tile per thread: the window's loads and their 64-bit
# addresses are live together, and larger tiles spill on sm_90 (measured by AOT).
GPU_CONFIGS = [
    dict(BP=64, BC=128, num_warps=8),
    dict(BP=64, BC=64, num_warps=4),
    dict(BP=128, BC=32, num_warps=8),
    dict(BP=256, BC=16, num_warps=8),
]
INTERPRETER_CONFIG = dict(BP=128, BC=16, num_warps=4)


def candidate_configs(P: int, C: int, interpret: bool) -> list[dict]:
    """Configs whose channel block is no wider than the channels need."""
    if interpret:
        return [INTERPRETER_CONFIG]
    width = max(16, next_power_of_2(C))
    fitting = [c for c in GPU_CONFIGS if c["BC"] <= width]
    return sorted(fitting, key=lambda c: -c["BC"]) or GPU_CONFIGS[-1:]


def grid(P: int, C: int, config: dict) -> tuple[int, int]:
    return (cdiv(P, config["BP"]), cdiv(C, config["BC"]))


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Pool2DBinding(Binding):
    x: int  # which input is the NHWC image
    pool: str  # "max" or "avg"
    pool_size: tuple[int, int]
    strides: tuple[int, int]
    padding: str  # "valid" or "same"
    out_dtype: torch.dtype


@dataclass(kw_only=True)
class Pool2DCall(Call):
    x: torch.Tensor  # contiguous
    H: int
    W: int
    C: int
    OH: int
    OW: int
    P: int  # N * OH * OW: the output pixels
    pad_top: int
    pad_left: int


def launch(binding: Pool2DBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x is NHWC (N, H, W, C).
    x = inputs[binding.x].contiguous()
    N, H, W, C = x.shape
    OH, OW, pad_top, pad_left = sliding_window(H, W, binding.pool_size, binding.strides, (1, 1), binding.padding)
    # allocate
    if out is None:
        out = torch.empty((N, OH, OW, C), device=x.device, dtype=binding.out_dtype)
    call = Pool2DCall(binding, inputs, out, x=x, H=H, W=W, C=C, OH=OH, OW=OW, P=N * OH * OW,
                      pad_top=pad_top, pad_left=pad_left)
    run(call, config, interpret)
    return out


@tuned(lambda call, interpret: candidate_configs(call.P, call.C, interpret))
def run(call: Pool2DCall, config: dict):
    b = call.binding
    pool2d_kernel[grid(call.P, call.C, config)](
        call.x, call.out, call.H, call.W, call.C, call.OH, call.OW, call.P,
        *b.strides, call.pad_top, call.pad_left,
        POOL=b.pool, PH=b.pool_size[0], PW=b.pool_size[1], BP=config["BP"], BC=config["BC"],
        num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _group(fusion, node):
    """A pool no conv absorbed ('same' padding, or after something other than a conv)."""
    return Group(node) if node.op in POOLS else None


TEMPLATES = (Template("pool2d", launch, Pool2DBinding, group=_group, priority=60),)
