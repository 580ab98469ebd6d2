"""Depthwise conv2d templates: the forward (with an epilogue), its input gradient and its filter
gradient, for conv2d with groups == input channels (DepthwiseConv2D, SeparableConv2D's first half).

Why not the implicit-GEMM conv2d template with a groups argument: a depthwise output channel f
reads one input channel, c = f // DM (DM = filters / groups, Keras's depth_multiplier), so its
reduction is K = KH * KW taps (9 for a 3x3 window). tl.dot needs K >= 16 per step, and a tile of
BN filters spanning several groups would multiply a block-diagonal weight matrix, BN / DM times
the flops in zeros. The work is memory-bound (two flops per loaded element), so each template here
walks the taps and accumulates products elementwise in float32 (no tl.dot, no TF32: float32 is
computed in float32). Tiles are BM pixels x BN channels; NHWC makes the channel axis contiguous,
so every load is coalesced along BN.

Forward, Y (N, OH, OW, F): Y[p, f] = sum over taps of X[pixel p's tap, f // DM] * W[tap, f], the
kernel (KH, KW, 1, F) read as a row-major (KH*KW, F) matrix; the padding reads 0 (the reference
pads with zeros, so 0 * a NaN weight is NaN in both). Hook EPILOGUE(acc, offs_m, offs_n, mask_m,
mask_n, E0..E3, S0..S3) as in the conv2d template: bias, activation, a residual.

Input gradient, dX (N, H, W, C): pixel h receives from output row oh = (h + pad_top - kh*dh) / sh
when the division is exact and 0 <= oh < OH (as kernels/conv2d_grad.py's dgrad), over every tap
and the DM filters of channel c. A tap that misses adds nothing (tl.where, not a 0 * weight), so a
NaN weight reaches only the pixels its tap reaches, as in the reference.

Filter gradient, dW (KH, KW, 1, F): one program per (tap, BN filters, chunk of the L = N * OH * OW
output pixels) sums X[tap pixel, f // DM] * dY[l, f] over its chunk in BL steps and stores the
float32 partial sum; the launch adds the chunks' sums in order (filter_splits: few taps and
filters leave a GPU idle without the split; no atomics, so the same bits every run). HAS_BSUM
also sums dY's columns (the bias gradient) in the first tap's programs.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.conv import sliding_window
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.conv2d_grad import Conv2DGradBinding, checked_pads, filter_group_rule
from kcomp.kernels.operands import EPILOGUE_OPERANDS, Operand, contiguous_operands, tile_operand_args
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Call, Group, Template
from kcomp.kernels.tiling import kernel_options


@triton.jit
def depthwise_kernel(
    X, Wt, Y,
    H, W, C, F, DM, KW, TAPS, OH, OW, M,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    E0, E1, E2, E3, S0, S1, S2, S3,
    EPILOGUE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)  # output pixels (n, oh, ow)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)  # filters
    mask_m = offs_m < M
    mask_n = offs_n < F
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    x_rows = X + (offs_m // (OW * OH)).to(tl.int64) * H * W * C  # each row's image
    c = offs_n // DM  # the one input channel each filter reads
    ih0 = oh * stride_h - pad_top
    iw0 = ow * stride_w - pad_left
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for tap in range(TAPS):
        ih = ih0 + (tap // KW) * dil_h
        iw = iw0 + (tap % KW) * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # outside: the padding, 0
        x = tl.load(x_rows[:, None] + ((ih * W + iw) * C)[:, None] + c[None, :],
                    mask=inside[:, None] & mask_n[None, :], other=0.0)
        w = tl.load(Wt + tap * F + offs_n, mask=mask_n, other=0.0)
        acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    acc = EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3)
    y_ptrs = Y + offs_m.to(tl.int64)[:, None] * F + offs_n[None, :]
    tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def depthwise_grad_input_kernel(
    DY, Wt, DX,
    H, W, C, F, DM, KW, TAPS, OH, OW, M,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    BM: tl.constexpr, BN: tl.constexpr,
):
    offs_m = tl.program_id(0) * BM + tl.arange(0, BM)  # input pixels (n, h, w)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)  # input channels
    mask_m = offs_m < M
    mask_n = offs_n < C
    w = offs_m % W
    h = (offs_m // W) % H
    dy_rows = DY + (offs_m // (W * H)).to(tl.int64) * OH * OW * F
    h0 = h + pad_top  # the pixel in padded coordinates
    w0 = w + pad_left
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for tap in range(TAPS):
        # The output pixel whose tap lands here; clamped at 0 before dividing (see conv2d_grad.py).
        th = h0 - (tap // KW) * dil_h
        tw = w0 - (tap % KW) * dil_w
        oh = tl.maximum(th, 0) // stride_h
        ow = tl.maximum(tw, 0) // stride_w
        hits = mask_m & (oh * stride_h == th) & (ow * stride_w == tw) & (oh < OH) & (ow < OW)
        hit = hits[:, None] & mask_n[None, :]
        for m in range(DM):
            f = offs_n * DM + m
            dy = tl.load(dy_rows[:, None] + ((oh * OW + ow) * F)[:, None] + f[None, :], mask=hit, other=0.0)
            wt = tl.load(Wt + tap * F + f, mask=mask_n, other=0.0)
            acc += tl.where(hit, dy.to(tl.float32) * wt.to(tl.float32)[None, :], 0.0)
    dx_ptrs = DX + offs_m.to(tl.int64)[:, None] * C + offs_n[None, :]
    tl.store(dx_ptrs, acc.to(DX.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def depthwise_grad_filter_kernel(
    X, DY, PARTS, BPARTS,
    H, W, C, F, DM, KW, TAPS, OH, OW, L,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, CHUNK,
    HAS_BSUM: tl.constexpr, BL: tl.constexpr, BN: tl.constexpr,
):
    tap = tl.program_id(0)
    offs_n = tl.program_id(1) * BN + tl.arange(0, BN)  # filters
    split = tl.program_id(2)  # this program's CHUNK output pixels of the L
    mask_n = offs_n < F
    c = offs_n // DM
    tap_h = (tap // KW) * dil_h - pad_top
    tap_w = (tap % KW) * dil_w - pad_left
    acc = tl.zeros((BL, BN), dtype=tl.float32)
    bsum = tl.zeros((BL, BN), dtype=tl.float32)
    for l0 in range(split * CHUNK, tl.minimum(split * CHUNK + CHUNK, L), BL):
        offs_l = l0 + tl.arange(0, BL)  # output pixels (n, oh, ow), the reduction
        mask_l = offs_l < L
        ow = offs_l % OW
        oh = (offs_l // OW) % OH
        ih = oh * stride_h + tap_h
        iw = ow * stride_w + tap_w
        inside = mask_l & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # outside: the padding, 0
        x_rows = X + (offs_l // (OW * OH)).to(tl.int64) * H * W * C
        x = tl.load(x_rows[:, None] + ((ih * W + iw) * C)[:, None] + c[None, :],
                    mask=inside[:, None] & mask_n[None, :], other=0.0)
        dy = tl.load(DY + offs_l.to(tl.int64)[:, None] * F + offs_n[None, :],
                     mask=mask_l[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
        acc += x.to(tl.float32) * dy
        if HAS_BSUM:
            bsum += dy
    tl.store(PARTS + (split * TAPS + tap) * F + offs_n, tl.sum(acc, axis=0), mask=mask_n)
    if HAS_BSUM:  # every tap's programs read the same dY; the first tap's store its sums
        first = tl.full((BN,), tap, tl.int32) == 0
        tl.store(BPARTS + split * F + offs_n, tl.sum(bsum, axis=0), mask=mask_n & first)


# Block sizes, as data. No tl.dot, so no side need be >= 16; BN runs along the contiguous
# channels. GPU configurations are autotuned among; the interpreter runs one, with few programs.
GPU_CONFIGS = [
    dict(BM=64, BN=64, num_warps=4, num_stages=2),
    dict(BM=128, BN=32, num_warps=4, num_stages=2),
    dict(BM=32, BN=128, num_warps=4, num_stages=2),
    # Not 128x16: with Triton 3.6 (the GPU machine's) the input gradient spilled 8 bytes there.
    dict(BM=64, BN=16, num_warps=4, num_stages=2),
]
INTERPRETER_CONFIG = dict(BM=64, BN=16, num_warps=4, num_stages=1)
# The filter gradient's tile is BL pixels x BN filters, reduced over the pixels at the end.
FILTER_GPU_CONFIGS = [
    dict(BL=128, BN=32, num_warps=4, num_stages=2),
    dict(BL=64, BN=64, num_warps=4, num_stages=2),
    dict(BL=256, BN=16, num_warps=4, num_stages=2),
]
FILTER_INTERPRETER_CONFIG = dict(BL=128, BN=16, num_warps=4, num_stages=1)
# The filter gradient has only KH*KW x F/BN tiles (18 for a 3x3 window over 64 channels) and a
# long reduction over the batch's pixels: it is split into up to MAX_SPLITS chunks of at least
# STEPS_PER_SPLIT BL-steps, each program storing its float32 partial sums, which the launch adds
# in a fixed order (the same bits every run; no atomics).
MAX_SPLITS = 64
STEPS_PER_SPLIT = 8


def filter_splits(L: int, BL: int) -> int:
    return max(1, min(MAX_SPLITS, cdiv(L, BL * STEPS_PER_SPLIT)))


def _fitting(configs, channels: int, key: str = "BN"):
    """Configs whose channel tile is no wider than the channels need."""
    fits = [c for c in configs if c[key] <= max(16, next_power_of_2(channels))]
    return fits or configs[-1:]


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DepthwiseBinding(Conv2DGradBinding):
    """The forward: strides, dilation and padding (from Conv2DGradBinding), the inputs, the hook."""

    epilogue: object  # the generated @triton.jit EPILOGUE hook
    operands: tuple[Operand, ...]  # what EPILOGUE loads (E0..E3)
    x: int  # which input is the NHWC image
    w: int  # which input is the (KH, KW, 1, F) kernel
    out_dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class DepthwiseGradInputBinding(Conv2DGradBinding):
    dy: int  # which input is the conv's output gradient (N, OH, OW, F)
    w: int  # which input is its (KH, KW, 1, F) kernel
    input_size: tuple[int, int]  # (H, W) of the conv's input
    channels: int  # C, the conv's input channels (= groups): F / C is the depth multiplier
    dx_dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class DepthwiseGradFilterBinding(Conv2DGradBinding):
    kernel_size: tuple[int, int]
    x: int  # which input is the conv's input (N, H, W, C)
    dy: int  # which input is its output gradient (N, OH, OW, F)
    dw_dtype: torch.dtype
    column_sums_dtype: torch.dtype | None  # dY's sums over N, OH, OW (the bias gradient); None: not computed


@dataclass(kw_only=True)
class DepthwiseCall(Call):
    """The sizes every depthwise kernel takes, in their argument order (sizes()), with the tensors."""

    tensors: tuple  # the kernel's tensor arguments, first in its signature
    H: int
    W: int
    C: int
    F: int
    KW: int
    TAPS: int  # KH * KW
    OH: int
    OW: int
    M: int  # the tiled pixels: output pixels (forward), input pixels (input gradient), L (filter gradient)
    pad_top: int
    pad_left: int

    def sizes(self) -> tuple:
        (sh, sw), (dh, dw) = self.binding.strides, self.binding.dilation
        return (self.H, self.W, self.C, self.F, self.F // self.C, self.KW, self.TAPS,
                self.OH, self.OW, self.M, sh, sw, dh, dw, self.pad_top, self.pad_left)


def _depthwise_kernel_shape(what, w, channels):
    KH, KW, one, F = w.shape
    if one != 1 or F % channels:
        raise ValueError(f"{what}: kernel {tuple(w.shape)} is not depthwise for {channels} channels")
    return KH, KW, F


def launch(binding: DepthwiseBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x is NHWC (N, H, W, C); the kernel (KH, KW, 1, F), F a multiple of C, is read as (KH*KW, F).
    tensors = list(inputs)
    x = tensors[binding.x].contiguous()
    w = tensors[binding.w].contiguous()
    N, H, W, C = x.shape
    KH, KW, F = _depthwise_kernel_shape("depthwise conv2d", w, C)
    contiguous_operands(tensors, binding.operands)
    OH, OW, pad_top, pad_left = sliding_window(H, W, (KH, KW), binding.strides, binding.dilation, binding.padding)
    # allocate
    if out is None:
        out = torch.empty((N, OH, OW, F), device=x.device, dtype=binding.out_dtype)
    call = DepthwiseCall(
        binding=binding, inputs=inputs, out=out,
        tensors=(x, w, out, *tile_operand_args(tensors, binding.operands, EPILOGUE_OPERANDS, out)),
        H=H, W=W, C=C, F=F, KW=KW, TAPS=KH * KW, OH=OH, OW=OW, M=N * OH * OW, pad_top=pad_top, pad_left=pad_left,
    )
    run(call, config, interpret)
    return out


@tuned(lambda call, interpret: [INTERPRETER_CONFIG] if interpret else _fitting(GPU_CONFIGS, call.F))
def run(call: DepthwiseCall, config: dict):
    x, w, y, *operand_args = call.tensors
    grid = (cdiv(call.M, config["BM"]), cdiv(call.F, config["BN"]))
    depthwise_kernel[grid](x, w, y, *call.sizes(), *operand_args, EPILOGUE=call.binding.epilogue, **kernel_options(config))


def launch_input(binding: DepthwiseGradInputBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: dy (N, OH, OW, F) is the output gradient of a depthwise conv of kernel (KH, KW, 1, F)
    # over an input of binding.input_size; dX is (N, H, W, C) with C = F / DM.
    dy = inputs[binding.dy].contiguous()
    w = inputs[binding.w].contiguous()
    N, OH, OW, F = dy.shape
    KH, KW, F_w = _depthwise_kernel_shape("depthwise conv2d_backprop_input", w, 1)
    if F_w != F:
        raise ValueError(f"conv2d_backprop_input: gradient {tuple(dy.shape)} has {F} filters, kernel {tuple(w.shape)} {F_w}")
    H, W = binding.input_size
    C = binding.channels
    pad_top, pad_left = checked_pads("conv2d_backprop_input", binding, dy, H, W, KH, KW)
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=binding.dx_dtype)
    call = DepthwiseCall(
        binding=binding, inputs=inputs, out=out, tensors=(dy, w, out),
        H=H, W=W, C=C, F=F, KW=KW, TAPS=KH * KW, OH=OH, OW=OW, M=N * H * W, pad_top=pad_top, pad_left=pad_left,
    )
    run_input(call, config, interpret)
    return out


@tuned(lambda call, interpret: [INTERPRETER_CONFIG] if interpret else _fitting(GPU_CONFIGS, call.C))
def run_input(call: DepthwiseCall, config: dict):
    grid = (cdiv(call.M, config["BM"]), cdiv(call.C, config["BN"]))
    depthwise_grad_input_kernel[grid](*call.tensors, *call.sizes(), **kernel_options(config))


def launch_filter(binding: DepthwiseGradFilterBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x (N, H, W, C) is a depthwise conv's input, dy (N, OH, OW, F) its output gradient, F a
    # multiple of C; dW is (KH, KW, 1, F), and with column_sums_dtype dY's sums (F,) come second.
    x = inputs[binding.x].contiguous()
    dy = inputs[binding.dy].contiguous()
    N, H, W, C = x.shape
    N_dy, OH, OW, F = dy.shape
    if N_dy != N or F % C:
        raise ValueError(f"depthwise conv2d_backprop_filter: input {tuple(x.shape)} and gradient {tuple(dy.shape)} do not fit")
    KH, KW = binding.kernel_size
    pad_top, pad_left = checked_pads("conv2d_backprop_filter", binding, dy, H, W, KH, KW)
    has_bsum = binding.column_sums_dtype is not None
    if out is None:
        dw = torch.empty((KH, KW, 1, F), device=x.device, dtype=binding.dw_dtype)
        out = (dw, torch.empty((F,), device=x.device, dtype=binding.column_sums_dtype)) if has_bsum else dw
    call = DepthwiseCall(
        binding=binding, inputs=inputs, out=out, tensors=(x, dy),
        H=H, W=W, C=C, F=F, KW=KW, TAPS=KH * KW, OH=OH, OW=OW, M=N * OH * OW, pad_top=pad_top, pad_left=pad_left,
    )
    run_filter(call, config, interpret)
    return out


@tuned(lambda call, interpret: [FILTER_INTERPRETER_CONFIG] if interpret else _fitting(FILTER_GPU_CONFIGS, call.F))
def run_filter(call: DepthwiseCall, config: dict):
    x, dy = call.tensors
    has_bsum = call.binding.column_sums_dtype is not None
    dw, bsum = call.out if has_bsum else (call.out, None)
    splits = filter_splits(call.M, config["BL"])
    chunk = cdiv(cdiv(call.M, splits), config["BL"]) * config["BL"]
    parts = torch.empty((splits, call.TAPS, call.F), device=x.device, dtype=torch.float32)
    bparts = torch.empty((splits, call.F), device=x.device, dtype=torch.float32) if has_bsum else parts
    grid = (call.TAPS, cdiv(call.F, config["BN"]), splits)
    depthwise_grad_filter_kernel[grid](
        x, dy, parts, bparts, *call.sizes(), chunk, HAS_BSUM=has_bsum, **kernel_options(config),
    )
    # The chunks' partial sums, added in order.
    dw.copy_(parts.sum(dim=0).view(dw.shape))
    if has_bsum:
        bsum.copy_(bparts.sum(dim=0))


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def is_depthwise(node) -> bool:
    """A conv op whose every group reads one input channel: groups == input channels > 1."""
    if node.op not in ("conv2d", "conv2d_backprop_input", "conv2d_backprop_filter") or node.attrs["groups"] == 1:
        return False
    if not all(v.dtype in FLOAT_DTYPES for v in node.inputs):
        return False
    kernel = node.outputs[0] if node.op == "conv2d_backprop_filter" else node.inputs[1]
    return kernel.shape[2] == 1


def _takes_epilogue(node) -> bool:
    return node.op == "conv2d" and is_depthwise(node)


def _group(fusion, node):
    """The depthwise conv and the elementwise chain after it (bias, activation, ...)."""
    if not _takes_epilogue(node):
        return None
    nodes = [node]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    return Group(node, epilogue=nodes[1:])


def _input_group(fusion, node):
    return Group(node) if node.op == "conv2d_backprop_input" and is_depthwise(node) else None


TEMPLATES = (
    Template("conv2d_depthwise", launch, DepthwiseBinding, group=_group, priority=21, takes_epilogue=_takes_epilogue),
    Template("conv2d_depthwise_grad_input", launch_input, DepthwiseGradInputBinding, group=_input_group, priority=42),
    # Before reduce (50): a depthwise conv's bias gradient is summed with its filter gradient.
    Template("conv2d_depthwise_grad_filter", launch_filter, DepthwiseGradFilterBinding,
             group=filter_group_rule(is_depthwise), priority=43),
)
