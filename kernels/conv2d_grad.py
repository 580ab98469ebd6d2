"""Conv2D backward templates: the filter gradient (wgrad) and the input gradient (dgrad).

Both are implicit GEMMs over NHWC tensors, like the forward template
(kernels/conv2d.py): nothing is unfolded in memory; each K step decodes its
indices into image coordinates and gathers with masks. The forward pads
(pad_top, pad_left: kcomp.ir.ops.conv.window_pads) are run-time arguments, as
are strides and dilation (Triton specialises the ones equal to 1).

wgrad, dW (KH, KW, C, F) read as a row-major (KH*KW*C, F) matrix:
  dW[m, f] = sum over l of X_col[m, l] * dY[l, f]
  rows m = (kh, kw, c) (channels fastest, the kernel's layout), columns f the
  filters, and the long reduction runs over the L = N * OH * OW output pixels
  l = (n, oh, ow). X_col[m, l] = x[n, oh*sh + kh*dh - pad_top, ow*sw + kw*dw - pad_left, c],
  0 in the padding. dY (N, OH, OW, F) is already the (L, F) matrix.
  Hooks: PROLOGUE(dy, offs_l, offs_f, mask_l, mask_f, P0, P1, T0, T1) runs on each
  loaded dY tile (rows l, columns f: the elementwise ops that produced dY, such as
  relu's gradient mask); HAS_BSUM also writes dY's column sums (the bias gradient,
  sum over N, OH, OW) from the tiles it loads anyway, as kernels/matmul.py does.

dgrad, dX (N, H, W, C):
  dX[p, c] = sum over k of dY_col[p, k] * W_t[k, c]
  rows p = (n, h, w) input pixels, columns the C input channels, reduction over
  k = (kh, kw, f). The tap (kh, kw) of output pixel (oh, ow) reads input pixel
  (oh*sh + kh*dh - pad_top, ...), so pixel h receives from oh = (h + pad_top - kh*dh) / sh
  when that division is exact and 0 <= oh < OH; every other (p, k) is masked to 0.
  W_t[k, c] = W[kh, kw, c, f]: the kernel read transposed through its layout.
  With strides > 1 most taps of a K step miss (a fraction 1 - 1/(sh*sw)); that
  costs flops on masked zeros, not memory traffic. Those zeros also multiply every
  weight, so a NaN or inf weight makes its channel of dX NaN at every pixel, where
  torch's dX is non-finite only at the pixels the weight's tap reaches: more NaN than
  the reference, never fewer (a GEMM cannot mask B per row). NaN and inf in X and dY
  give exactly the reference's.

Accumulation is float32; both use tl.dot (tensor cores). dgrad is also Conv2DTranspose's forward
(a transposed convolution is the input gradient of a convolution); its hook
EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0..E3, S0..S3), as in the conv2d template, computes
that layer's bias and activation before the store (the identity in a backward pass).

Each has its launch here (launch_filter, launch_input: check the sizes against the
forward's geometry, allocate, run with a tuned config); a generated module gives it a
binding: which input is which, the forward's strides, dilation and padding, the
output dtypes and, for wgrad, the prologue hook and whether to write the bias gradient.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.conv import output_size, pads_before
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import EPILOGUE_OPERANDS, PROLOGUE_OPERANDS, Operand, contiguous_operands, tile_operand_args
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template
from kcomp.kernels.tiling import gemm_grid, grouped_tile, kernel_options


@triton.jit
def conv2d_grad_filter_kernel(
    X, DY, DW, BSUM,
    H, W, C, F, KW, OH, OW, M, L,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    CHUNK, SPLIT_STRIDE,
    P0, P1, T0, T1,
    PROLOGUE: tl.constexpr, HAS_PROLOGUE: tl.constexpr, HAS_BSUM: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT_K: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), M, F, BM, BN, GROUP_M)
    # The reduction's part this program sums (SPLIT_K): CHUNK output pixels, a whole number of BK
    # steps, from program_id(1) * CHUNK on, the last part cut at L; else all L. SPLIT_K is a
    # constexpr so that the unsplit kernel is the one compiled before parts existed: with the part's
    # bounds in the same code, ptxas gave the unsplit bfloat16 kernel 80 registers and an 8-byte
    # spill on sm_89 (96 and none before).
    if SPLIT_K:
        first_l = tl.program_id(1) * CHUNK
        pixels = CHUNK
    else:
        first_l = 0
        pixels = L
    offs_m = tile_m * BM + tl.arange(0, BM)  # rows of dW: (kh, kw, c)
    offs_n = tile_n * BN + tl.arange(0, BN)  # filters
    mask_m = offs_m < M
    mask_n = offs_n < F
    c = offs_m % C
    kw = (offs_m // C) % KW
    kh = offs_m // (C * KW)
    tap_h = kh * dil_h - pad_top  # where each row's tap sits relative to the window's corner
    tap_w = kw * dil_w - pad_left

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    bsum = tl.zeros((BN,), dtype=tl.float32)
    for l0 in range(0, pixels, BK):
        offs_l = first_l + l0 + tl.arange(0, BK)  # output pixels (n, oh, ow), the reduction
        mask_l = offs_l < L
        ow = offs_l % OW
        oh = (offs_l // OW) % OH
        x_cols = X + (offs_l // (OW * OH)).to(tl.int64) * H * W * C  # each column's image (64-bit, 1-D)
        ih = tap_h[:, None] + (oh * stride_h)[None, :]
        iw = tap_w[:, None] + (ow * stride_w)[None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # outside: the padding, which reads 0
        a_mask = mask_m[:, None] & mask_l[None, :] & inside
        a = tl.load(x_cols[None, :] + (ih * W + iw) * C + c[:, None], mask=a_mask, other=0.0)
        b_mask = mask_l[:, None] & mask_n[None, :]
        b = tl.load(DY + offs_l.to(tl.int64)[:, None] * F + offs_n[None, :], mask=b_mask, other=0.0)
        if HAS_PROLOGUE:
            # Masked elements stay 0 after the prologue (f(0) may be nonzero).
            pro = PROLOGUE(b.to(tl.float32), offs_l, offs_n, mask_l, mask_n, P0, P1, T0, T1)
            b = tl.where(b_mask, pro, 0.0).to(a.dtype)  # x's: a prologue may end in a cast (mixed precision)
        if HAS_BSUM:
            bsum += tl.sum(b.to(tl.float32), axis=0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if SPLIT_K:  # a part's partial sums go SPLIT_STRIDE elements after the previous part's
        split = tl.program_id(1).to(tl.int64)
        DW += split * SPLIT_STRIDE
        BSUM += split * SPLIT_STRIDE
    tl.store(DW + offs_m[:, None] * F + offs_n[None, :], acc.to(DW.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    if HAS_BSUM:  # every row of tiles summed the same dY columns; the first one stores them
        first_row = tl.full((BN,), tile_m, tl.int32) == 0
        tl.store(BSUM + offs_n, bsum.to(BSUM.dtype.element_ty), mask=mask_n & first_row)


@triton.jit
def split_sum_kernel(PART, DW, BSUM, MF, ROW, COUNT, SPLITS, BLOCK: tl.constexpr):
    """dW (and the bias gradient) from a split filter gradient's partial sums: PART holds SPLITS rows
    of ROW = M*F + F float32 elements, dW's then the bias gradient's. The first COUNT of a row (M*F,
    or all ROW with a bias gradient) are summed over the splits in order (the same sums at every
    run) and cast to their output's dtype."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < COUNT
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    part = PART + offs
    for _ in range(0, SPLITS):
        acc += tl.load(part, mask=mask, other=0.0)
        part += ROW  # the pointer is 64-bit: no int32 product of split and row
    tl.store(DW + offs, acc.to(DW.dtype.element_ty), mask=offs < MF)
    tl.store(BSUM + (offs - MF), acc.to(BSUM.dtype.element_ty), mask=mask & (offs >= MF))


@triton.jit
def conv2d_grad_input_kernel(
    DY, Wt, DX,
    H, W, C, F, KW, OH, OW, M, K,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    E0, E1, E2, E3, S0, S1, S2, S3,
    EPILOGUE: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), M, C, BM, BN, GROUP_M)
    offs_m = tile_m * BM + tl.arange(0, BM)  # input pixels (n, h, w)
    offs_n = tile_n * BN + tl.arange(0, BN)  # input channels
    mask_m = offs_m < M
    mask_n = offs_n < C
    w = offs_m % W
    h = (offs_m // W) % H
    n = (offs_m // (W * H)).to(tl.int64)
    dy_rows = DY + n * OH * OW * F  # each row's image of dY
    h0 = h + pad_top  # the pixel in padded coordinates
    w0 = w + pad_left

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mask_k = offs_k < K
        # k -> (kh, kw, f): filters fastest, so a K step reads contiguous filters of dY.
        f = offs_k % F
        tap = offs_k // F  # kh * KW + kw
        kw = tap % KW
        kh = tap // KW
        # Output row oh whose tap kh lands on h: oh * sh = h0 - kh * dh. Clamped at 0 before
        # dividing, so integer division never sees a negative number (its rounding differs);
        # a negative th then fails oh * sh == th, as does a division that is not exact.
        th = h0[:, None] - (kh * dil_h)[None, :]
        tw = w0[:, None] - (kw * dil_w)[None, :]
        oh = tl.maximum(th, 0) // stride_h
        ow = tl.maximum(tw, 0) // stride_w
        hits = (oh * stride_h == th) & (ow * stride_w == tw) & (oh < OH) & (ow < OW)
        a_mask = mask_m[:, None] & mask_k[None, :] & hits
        a = tl.load(dy_rows[:, None] + (oh * OW + ow) * F + f[None, :], mask=a_mask, other=0.0)
        # W_t[k, c] = W[kh, kw, c, f] at (tap * C + c) * F + f.
        b_ptrs = Wt + (tap[:, None] * C + offs_n[None, :]) * F + f[:, None]
        b = tl.load(b_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    # A Conv2DTranspose's bias and activation (its forward is this op); the identity for a gradient.
    acc = EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3)
    dx_ptrs = DX + offs_m.to(tl.int64)[:, None] * C + offs_n[None, :]
    tl.store(dx_ptrs, acc.to(DX.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Block sizes, as data. tl.dot needs every tile side >= 16. GPU configurations are
# autotuned among; the interpreter (CPU) runs one config with few, large programs.
# wgrad: M = KH*KW*C and F are small (a 3x3x16x32 kernel is a 144 x 32 matrix) while the
# reduction over the batch's pixels is long. BK = 32 as in the forward: the X gather holds a
# BM x BK tile of addresses and masks, and at BK = 64 sm_90 spills (measured by AOT: 255
# registers, 56 bytes of local memory at 64 x 16 x 64 on 4 warps). BM stays >= 64: with
# 4 warps, sm_90's warpgroup MMA (HGMMA) needs 64 rows; a 32-row tile falls back to mma.sync
# (measured by AOT: HMMA only).
FILTER_GPU_CONFIGS = [
    dict(BM=128, BN=64, BK=32, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=64, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=16, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
]
FILTER_INTERPRETER_CONFIG = dict(BM=32, BN=16, BK=64, GROUP_M=4, num_warps=4, num_stages=1)
# A filter gradient has few tiles (a 3x3 conv from 1 channel to 32 filters is one 9 x 32 tile) and a
# long reduction (a batch of 128 26x26 outputs: 86528 pixels). One program per tile left most of
# an H200 idle: the CNN's step spent 98% of its GPU time in this kernel, 2.7 ms a launch, where
# cuDNN's took 35 us (torch.profiler, 2026-12-04). A config with SPLIT > 1 cuts the reduction in
# that many parts, summed by as many programs per tile into float32 partial sums, which
# split_sum_kernel then adds in order: two launches, the same result at every run (no atomics).
SPLIT_PROGRAMS = 264  # programs to aim for: two per SM of an H100/H200 (132 SMs)
SPLIT_MIN_PIXELS = 256  # each part sums at least this many pixels, so partial sums cost little traffic
SPLIT_SUM_BLOCK = 1024

# dgrad: rows are the batch's input pixels (many), columns the input channels.
INPUT_GPU_CONFIGS = [
    dict(BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=128, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=16, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
]
INPUT_INTERPRETER_CONFIG = dict(BM=64, BN=16, BK=32, GROUP_M=4, num_warps=4, num_stages=1)


def _fitting(configs: list[dict], M: int, N: int) -> list[dict]:
    """Configs whose tiles are no larger than the problem needs (narrow N: few channels)."""
    fits = [
        c for c in configs
        if c["BM"] <= max(64, next_power_of_2(M)) and c["BN"] <= max(16, next_power_of_2(N))
    ]
    return fits or configs[-1:]


def filter_split(M: int, F: int, L: int, config: dict) -> int:
    """In how many parts a GPU sums the L pixels of an (M, F) filter gradient with these tiles: enough
    for about SPLIT_PROGRAMS programs, each summing at least SPLIT_MIN_PIXELS pixels; 1 when the
    tiles alone are that many programs."""
    tiles = cdiv(M, config["BM"]) * cdiv(F, config["BN"])
    return max(1, min(cdiv(SPLIT_PROGRAMS, tiles), L // SPLIT_MIN_PIXELS))


def filter_configs(M: int, F: int, L: int, interpret: bool) -> list[dict]:
    """wgrad candidates for a (M = KH*KW*C, F) gradient summed over L output pixels: each fitting
    tile, whole and with the reduction split (autotuning times both). The first is unsplit (what an
    AOT build compiles: the same kernel, one launch)."""
    if interpret:
        return [FILTER_INTERPRETER_CONFIG]
    configs = []
    for config in _fitting(FILTER_GPU_CONFIGS, M, F):
        split = filter_split(M, F, L, config)
        configs += [config] + ([{**config, "SPLIT": split}] if split > 1 else [])
    return configs


def input_configs(M: int, C: int, K: int, interpret: bool) -> list[dict]:
    """dgrad candidates for M = N*H*W input pixels by C channels, K = KH*KW*F."""
    return [INPUT_INTERPRETER_CONFIG] if interpret else _fitting(INPUT_GPU_CONFIGS, M, C)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Conv2DGradBinding(Binding):
    """The forward conv's geometry, which both gradients share."""

    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: str  # the forward's: "valid" or "same"


@dataclass(frozen=True, kw_only=True)
class Conv2DGradFilterBinding(Conv2DGradBinding):
    kernel_size: tuple[int, int]  # (KH, KW): dW's first axes, which neither x nor dY tells
    x: int  # which input is the conv's input x (N, H, W, C)
    dy: int  # which input is dY as loaded: where the prologue chain starts, else the conv's own
    prologue: object  # the generated @triton.jit PROLOGUE hook
    has_prologue: bool  # False: the hook is a placeholder and dY is used as loaded
    prologue_operands: tuple[Operand, ...]  # what the prologue loads: P0, P1 with row strides T0, T1
    dw_dtype: torch.dtype
    # dY's column sums (over N, OH, OW: the bias gradient), a second output (HAS_BSUM); None: not computed
    column_sums_dtype: torch.dtype | None


@dataclass(frozen=True, kw_only=True)
class Conv2DGradInputBinding(Conv2DGradBinding):
    dy: int  # which input is the conv's output gradient (N, OH, OW, F)
    w: int  # which input is its kernel (KH, KW, C, F)
    input_size: tuple[int, int]  # (H, W) of the conv's input: dY does not tell it (strides round down)
    epilogue: object  # the generated @triton.jit EPILOGUE hook (a transposed conv's bias, activation)
    operands: tuple[Operand, ...]  # what EPILOGUE loads (E0..E3)
    dx_dtype: torch.dtype


@dataclass
class Conv2DGradCall(Call):
    """The sizes both implicit GEMMs take, in their kernels' argument order (see sizes())."""

    H: int
    W: int
    C: int
    F: int
    KW: int
    OH: int
    OW: int
    M: int  # the GEMM's rows: KH*KW*C (wgrad), N*H*W input pixels (dgrad)
    K: int  # its reduction: L = N*OH*OW output pixels (wgrad), KH*KW*F taps (dgrad)
    pad_top: int
    pad_left: int

    def sizes(self) -> tuple:
        """The kernel arguments from H to pad_left, the forward's strides and dilation among them."""
        (sh, sw), (dh, dw) = self.binding.strides, self.binding.dilation
        return (self.H, self.W, self.C, self.F, self.KW, self.OH, self.OW, self.M, self.K,
                sh, sw, dh, dw, self.pad_top, self.pad_left)


@dataclass
class Conv2DGradFilterCall(Conv2DGradCall):
    x: torch.Tensor
    dy: torch.Tensor
    dw: torch.Tensor
    bsum: torch.Tensor  # dw itself when there is no bias gradient (HAS_BSUM False: never written)
    prologue_args: list  # P0, P1, T0, T1


@dataclass
class Conv2DGradInputCall(Conv2DGradCall):
    dy: torch.Tensor
    w: torch.Tensor
    operand_args: list  # E0..E3, S0..S3


def checked_pads(what: str, binding: Conv2DGradBinding, dy, H: int, W: int, KH: int, KW: int) -> tuple[int, int]:
    """The forward's pads, once dY (N, OH, OW, F) is checked to be its output for an H x W input."""
    (sh, sw), (dh, dw), padding = binding.strides, binding.dilation, binding.padding
    OH, OW = dy.shape[1], dy.shape[2]
    if (OH, OW) != (output_size(H, KH, sh, dh, padding), output_size(W, KW, sw, dw, padding)):
        raise ValueError(f"{what}: gradient {tuple(dy.shape)} does not fit a {H}x{W} input and a {KH}x{KW} window")
    return pads_before(H, W, (KH, KW), binding.strides, binding.dilation, padding)


def launch_filter(binding: Conv2DGradFilterBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x is the conv's NHWC input (N, H, W, C), dy its output's gradient (N, OH, OW, F);
    # dW (KH, KW, C, F) is computed as a row-major (KH*KW*C, F) matrix.
    tensors = list(inputs)
    x = tensors[binding.x].contiguous()
    dy = tensors[binding.dy].contiguous()
    N, H, W, C = x.shape
    N_dy, OH, OW, F = dy.shape
    if N_dy != N:
        raise ValueError(f"conv2d_backprop_filter: input {tuple(x.shape)} and gradient {tuple(dy.shape)} differ in batch")
    KH, KW = binding.kernel_size
    pad_top, pad_left = checked_pads("conv2d_backprop_filter", binding, dy, H, W, KH, KW)
    contiguous_operands(tensors, binding.prologue_operands)
    # allocate: dW, and dY's column sums (the bias gradient) when the binding asks for them
    has_bsum = binding.column_sums_dtype is not None
    if out is None:
        dw = torch.empty((KH, KW, C, F), device=x.device, dtype=binding.dw_dtype)
        out = (dw, torch.empty((F,), device=x.device, dtype=binding.column_sums_dtype)) if has_bsum else dw
    dw, bsum = out if has_bsum else (out, out)
    call = Conv2DGradFilterCall(
        binding, inputs, out, H=H, W=W, C=C, F=F, KW=KW, OH=OH, OW=OW, M=KH * KW * C, K=N * OH * OW,
        pad_top=pad_top, pad_left=pad_left,
        x=x, dy=dy, dw=dw, bsum=bsum,
        prologue_args=tile_operand_args(tensors, binding.prologue_operands, PROLOGUE_OPERANDS, dw),
    )
    run_filter(call, config, interpret, precision=precision)
    return out


@tuned(lambda call, interpret: filter_configs(call.M, call.F, call.K, interpret))
def run_filter(call: Conv2DGradFilterCall, config: dict, precision: str):
    b = call.binding
    tiles = {k: v for k, v in config.items() if k != "SPLIT"}
    # CHUNK: the pixels of one part, whole BK steps; as many parts as it takes to cover L.
    chunk = cdiv(cdiv(call.K, config.get("SPLIT", 1)), config["BK"]) * config["BK"]
    splits = cdiv(call.K, chunk)
    mf = call.M * call.F
    if splits == 1:
        dw, bsum, stride = call.dw, call.bsum, 0
    else:  # every part's dW then its bias-gradient sums, in float32; split_sum_kernel adds them
        part = torch.empty((splits, mf + call.F), device=call.dw.device, dtype=torch.float32)
        dw, bsum, stride = part, part[0, mf:], mf + call.F
    conv2d_grad_filter_kernel[(gemm_grid(call.M, call.F, config)[0], splits)](
        call.x, call.dy, dw, bsum, *call.sizes(), chunk, stride, *call.prologue_args,
        PROLOGUE=b.prologue, HAS_PROLOGUE=b.has_prologue, HAS_BSUM=b.column_sums_dtype is not None,
        PRECISION=precision, SPLIT_K=splits > 1, **kernel_options(tiles),
    )
    if splits > 1:
        n = mf + (call.F if b.column_sums_dtype is not None else 0)
        split_sum_kernel[(cdiv(n, SPLIT_SUM_BLOCK),)](part, call.dw, call.bsum, mf, stride, n, splits, BLOCK=SPLIT_SUM_BLOCK)


def launch_input(binding: Conv2DGradInputBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: dy is the conv's output gradient (N, OH, OW, F), w its kernel (KH, KW, C, F);
    # dX is the NHWC gradient (N, H, W, C) of the conv's input, (H, W) the binding's input_size.
    tensors = list(inputs)
    dy = tensors[binding.dy].contiguous()
    w = tensors[binding.w].contiguous()
    N, OH, OW, F = dy.shape
    KH, KW, C, F_w = w.shape
    H, W = binding.input_size
    if F_w != F:
        raise ValueError(f"conv2d_backprop_input: gradient {tuple(dy.shape)} has {F} filters, kernel {tuple(w.shape)} {F_w}")
    pad_top, pad_left = checked_pads("conv2d_backprop_input", binding, dy, H, W, KH, KW)
    contiguous_operands(tensors, binding.operands)
    # allocate
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=binding.dx_dtype)
    call = Conv2DGradInputCall(
        binding, inputs, out, H=H, W=W, C=C, F=F, KW=KW, OH=OH, OW=OW, M=N * H * W, K=KH * KW * F,
        pad_top=pad_top, pad_left=pad_left, dy=dy, w=w,
        operand_args=tile_operand_args(tensors, binding.operands, EPILOGUE_OPERANDS, out),
    )
    run_input(call, config, interpret, precision=precision)
    return out


@tuned(lambda call, interpret: input_configs(call.M, call.C, call.K, interpret))
def run_input(call: Conv2DGradInputCall, config: dict, precision: str):
    conv2d_grad_input_kernel[gemm_grid(call.M, call.C, config)](
        call.dy, call.w, call.out, *call.sizes(), *call.operand_args,
        EPILOGUE=call.binding.epilogue, PRECISION=precision, **kernel_options(config),
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _float_inputs(node) -> bool:
    return all(v.dtype in FLOAT_DTYPES for v in node.inputs)


def _input_takes_epilogue(node) -> bool:
    return node.op == "conv2d_backprop_input" and node.attrs["groups"] == 1 and _float_inputs(node)


def _input_group(fusion, node):
    """The input gradient and the elementwise chain after it: a Conv2DTranspose's bias and activation."""
    if not _input_takes_epilogue(node):
        return None
    nodes = [node]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    return Group(node, epilogue=nodes[1:])


def _is_bias_sum(u, dy) -> bool:
    """A sum over (N, OH, OW) of an NHWC gradient dy: the conv's bias gradient."""
    axes = u.attrs["axes"]
    return u.op == "sum" and dy.rank == 4 and not u.attrs["keepdims"] and axes is not None and sorted(a % 4 for a in axes) == [0, 1, 2]


def filter_group_rule(accepts):
    """The grouping rule of a filter-gradient template computing the conv2d_backprop_filter nodes
    `accepts(node)` takes: the filter gradient with the bias gradient sum(dy, axes (0, 1, 2)) as a
    second output, summed from the dy tiles it loads; the pair is found from whichever comes first.
    A cast after either (Fusion.stored_cast) is the dtype the kernel stores it in."""

    def group(fusion, node):
        if node.op == "conv2d_backprop_filter":
            if not accepts(node):
                return None
            dy = node.inputs[1]
            free = [u for u in fusion.users_of(dy) if fusion.is_free(u) and u is not node]
            sums = [u for u in free if _is_bias_sum(u, dy)][:1]
            return Group(node, epilogue=fusion.stored_cast(node), extra=[n for u in sums for n in (u, *fusion.stored_cast(u))])
        if node.op != "sum" or not _float_inputs(node):
            return None
        dy = node.inputs[0]
        free = [u for u in fusion.users_of(dy) if fusion.is_free(u) and u is not node]
        wgrads = [u for u in free if u.op == "conv2d_backprop_filter" and u.inputs[1].id == dy.id and accepts(u)]
        if not wgrads or not _is_bias_sum(node, dy):
            return None
        return Group(wgrads[0], epilogue=fusion.stored_cast(wgrads[0]), extra=[node, *fusion.stored_cast(node)])

    return group


def _dense_filter(node) -> bool:
    return node.op == "conv2d_backprop_filter" and node.attrs["groups"] == 1 and _float_inputs(node)


TEMPLATES = (
    # Before reduce (50): a sum that is a conv's bias gradient is computed with the filter gradient.
    Template("conv2d_grad_filter", launch_filter, Conv2DGradFilterBinding, tensor_cores=True, group=filter_group_rule(_dense_filter), priority=41),
    Template("conv2d_grad_input", launch_input, Conv2DGradInputBinding, tensor_cores=True, group=_input_group, priority=40,
             takes_epilogue=_input_takes_epilogue),
)
