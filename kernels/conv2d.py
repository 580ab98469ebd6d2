"""Conv2D template: Y = POOL(EPILOGUE(conv2d(X, W))), implicit GEMM over NHWC.

X is (N, H, W, C), the kernel (KH, KW, C, F) is read as a row-major (K, F)
matrix with K = KH * KW * C, and Y is NHWC. The GEMM view: rows M are output
pixels (n, oh, ow), columns are the F filters, and the reduction runs over
k = (kh, kw, c). Each program computes one BM x BN tile with tl.dot, walking K
in BK steps; the im2col matrix is never built: every step decodes its k's into
(kh, kw, c) and its rows into input coordinates, and loads X directly, masked
where the window reaches into the padding (those pixels read 0) and at ragged
edges. Strides, dilation and Keras's 'same' padding (pad_top, pad_left from
kcomp.ir.ops.conv.same_padding) are run-time arguments.

Hook: EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0..E3, S0..S3), as in the
matmul template, runs on the float32 accumulator; offs_m are conv output
pixels (n * CH + ch) * CW + cw, so a "full" operand is indexed with row
stride F.

Hook: PROLOGUE(x, offs_m, offs_c, mask_m, mask_k, P0, P1, T0, T1) runs on each loaded
window tile of X (the elementwise ops that produced X: a Rescaling, a Normalization), with
offs_c the channel of each tile column, so its operands are scalars or per-channel vectors
only (the fusion rule below takes no others; offs_m, the tile's rows, index nothing). The
padding stays 0 after it, as in Keras, where the conv pads what the prologue computed.

Fused pooling: with POOL = "max" or "avg" (a 'valid' pool of PH x PW windows,
strides PSH x PSW), rows M are POOLED output pixels. A program visits the
PH x PW window positions in turn, computes the conv tile of the pre-pool
pixels at each, applies EPILOGUE and max- or sum-accumulates, so the pre-pool
activation never reaches memory. Overlapping windows recompute the shared
pixels; that costs flops, not memory traffic.

STORE_PREPOOL: the pre-pool activation is also stored (into PREPOOL), as each
window position computes it: a training step needs it for the pool's and the
activation's gradients. The fusion pass asks for it only when the windows
cover every conv output pixel, so every element gets written.

Launch: `launch(binding, inputs, ...)` below reads image sizes from the tensors at
run time (the batch varies); a generated module supplies the EPILOGUE hook and a
Conv2DBinding: which inputs are the image and the kernel, the conv's strides,
dilation and padding, the absorbed pool, and the output dtypes.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.conv import sliding_window
from kcomp.ir.types import is_static
from kcomp.kernels.autotune import tuned
from kcomp.ir.registry import OPS
from kcomp.kernels.operands import (
    EPILOGUE_OPERANDS, PROLOGUE_OPERANDS, Operand, chain_input, contiguous_operands, operand_kind, tile_operand_args,
)
from kcomp.kernels.matmul import dot_operand
from kcomp.kernels.pool2d import POOLS
from kcomp.kernels.sizes import next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template
from kcomp.kernels.tiling import gemm_grid, grouped_tile, kernel_options


@triton.jit
def conv_tile(
    X, Wt, n, ch, cw, mask_m, offs_n, mask_n,
    H, W, C, F, K, KW,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, P0, P1, T0, T1,
    PROLOGUE: tl.constexpr, HAS_PROLOGUE: tl.constexpr, CAST_W: tl.constexpr, W_KMAJOR: tl.constexpr,
    PRECISION: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    """fp32 (BM, BN) tile of conv2d(X, W) at the output pixels (n, ch, cw) and filters offs_n.
    CAST_W ("bfloat16", "float16"; "": none): W is float32, cast in registers as it loads.
    W_KMAJOR: Wt is the kernel's (F, K) transpose, each filter's K weights contiguous (KMAJOR)."""
    ih0 = ch * stride_h - pad_top  # the window's top-left input pixel, per row
    iw0 = cw * stride_w - pad_left
    x_rows = X + n.to(tl.int64) * H * W * C  # each row's image
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        offs_k = k0 + tl.arange(0, BK)
        mask_k = offs_k < K
        # k -> (kh, kw, c): the kernel's row-major order, channels fastest.
        c = offs_k % C
        kw = (offs_k // C) % KW
        kh = offs_k // (C * KW)
        ih = ih0[:, None] + (kh * dil_h)[None, :]
        iw = iw0[:, None] + (kw * dil_w)[None, :]
        inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # outside: padding, reads 0
        a_mask = mask_m[:, None] & mask_k[None, :] & inside
        a = tl.load(x_rows[:, None] + (ih * W + iw) * C + c[None, :], mask=a_mask, other=0.0)
        if HAS_PROLOGUE:  # padding and ragged edges stay 0 (f(0) may be nonzero)
            pro = PROLOGUE(a.to(tl.float32), n, c, mask_m, mask_k, P0, P1, T0, T1)
            a = dot_operand(tl.where(a_mask, pro, 0.0), CAST_W, Wt)  # the filter's: a prologue may end in a cast
        if W_KMAJOR:
            w_ptrs = Wt + offs_n[None, :] * K + offs_k[:, None]
        else:
            w_ptrs = Wt + offs_k[:, None] * F + offs_n[None, :]
        b = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        if CAST_W != "":  # a float32 filter the IR casts to 16 bits (mixed precision)
            b = dot_operand(b, CAST_W, Wt)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.jit
def conv2d_kernel(
    X, Wt, Y, PREPOOL,
    H, W, C, F, K, KW,
    CH, CW, OH, OW, M,
    stride_h, stride_w, dil_h, dil_w, pad_top, pad_left,
    P0, P1, T0, T1, E0, E1, E2, E3, S0, S1, S2, S3,
    PROLOGUE: tl.constexpr, HAS_PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr,
    POOL: tl.constexpr, PH: tl.constexpr, PW: tl.constexpr, PSH: tl.constexpr, PSW: tl.constexpr,
    STORE_PREPOOL: tl.constexpr, CAST_W: tl.constexpr, W_KMAJOR: tl.constexpr, PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), M, F, BM, BN, GROUP_M)

    # Rows are output pixels (n, oh, ow) of Y: pooled pixels when POOL, conv pixels otherwise.
    offs_m = tile_m * BM + tl.arange(0, BM)
    offs_n = tile_n * BN + tl.arange(0, BN)
    mask_m = offs_m < M
    mask_n = offs_n < F
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)

    if POOL == "max":
        y = tl.full((BM, BN), float("-inf"), dtype=tl.float32)
    else:
        y = tl.zeros((BM, BN), dtype=tl.float32)
    # Without pooling PH = PW = PSH = PSW = 1: one position, the conv pixel itself.
    # A loop, not unrolled: unrolled, every position's K loop keeps its own
    # pipelined loads and addresses live, and sm_90 spills (measured by AOT).
    for p in range(PH * PW):
        ch = oh * PSH + p // PW
        cw = ow * PSW + p % PW
        acc = conv_tile(
            X, Wt, n, ch, cw, mask_m, offs_n, mask_n, H, W, C, F, K, KW,
            stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, P0, P1, T0, T1,
            PROLOGUE, HAS_PROLOGUE, CAST_W, W_KMAJOR, PRECISION, BM, BN, BK,
        )
        offs_conv = (n * CH + ch) * CW + cw  # the pre-pool pixel, as the epilogue's operands index it
        acc = EPILOGUE(acc, offs_conv, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3)
        if STORE_PREPOOL:
            pre_ptrs = PREPOOL + offs_conv.to(tl.int64)[:, None] * F + offs_n[None, :]
            tl.store(pre_ptrs, acc.to(PREPOOL.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
        if POOL == "max":
            y = tl.maximum(y, acc, propagate_nan=tl.PropagateNan.ALL)  # a NaN in the window wins, as in torch
        else:
            y += acc
    if POOL == "avg":
        y = y / (PH * PW)  # 'valid' windows: every pixel is real

    y_ptrs = Y + offs_m.to(tl.int64)[:, None] * F + offs_n[None, :]
    tl.store(y_ptrs, y.to(Y.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Block sizes, as data. tl.dot needs every tile side >= 16. GPU configurations are
# autotuned among; the interpreter (CPU) runs one config: each program is costly
# there, so tiles are as large as small test images need (few programs).
GPU_CONFIGS = [
    dict(BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=128, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=128, BN=64, BK=32, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=64, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=128, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=16, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
]
INTERPRETER_CONFIG = dict(BM=64, BN=16, BK=32, GROUP_M=4, num_warps=4, num_stages=1)

# With a fused pool a thread holds two fp32 tiles (the conv tile and the pooled
# result); beyond 32 elements of each per thread, sm_90 spills (measured by AOT:
# 128x64 tiles on 4 warps spill ~700 bytes, 64x64 none). A prologue on the window
# tiles (a rescale) or a stored pre-pool tile (training) takes more, most with Triton
# 3.6 (the GPU machine's): examples/cifar_augment.k's first conv with its rescale
# spilled 112 bytes at 255 registers at 128x32 on 4 warps (Triton 3.9) and at 64x32
# (3.6); its training conv storing the pre-pool tile 576 bytes at 128x32 (3.6). With
# either the limit is a quarter.
POOL_MAX_PER_THREAD = 32


def candidate_configs(M: int, F: int, K: int, interpret: bool, pool: bool = False, heavy: bool = False) -> list[dict]:
    """Configs worth trying for this shape: tiles no larger than the problem needs.

    Few filters (F <= 16, a first layer's 3 channels in) are common in convs:
    wide BN tiles would be mostly masked, so they are left out.
    """
    if interpret:
        return [INTERPRETER_CONFIG]
    configs = GPU_CONFIGS
    if pool:
        per_thread = POOL_MAX_PER_THREAD // 4 if heavy else POOL_MAX_PER_THREAD
        configs = [c for c in configs if c["BM"] * c["BN"] <= per_thread * 32 * c["num_warps"]]
        if heavy:  # fewer tiles in flight: the prologue runs on each loaded window tile
            configs = [{**c, "num_stages": min(c["num_stages"], 2)} for c in configs]
    fitting = [
        c for c in configs
        if c["BM"] <= max(64, next_power_of_2(M)) and c["BN"] <= max(16, next_power_of_2(F))
    ]
    return fitting or configs[-1:]


# Float32 convs also try the kernel copied K-major ((F, K): each filter's weights contiguous) with
# their first KMAJOR_TILES tiles: Hopper's TF32 wgmma (and mma.sync's ldmatrix) take B K-major, and
# the (K, F) kernel is F-major; as the matmul template's KMAJOR configs (kernels/matmul_configs.py),
# autotuning times the copy with the kernel.
KMAJOR_TILES = 2


def conv_candidates(call, interpret: bool) -> list[dict]:
    """candidate_configs for the call; for float32 on a GPU, also the first KMAJOR_TILES of them on a
    K-major copy of the kernel."""
    b = call.binding
    configs = candidate_configs(call.M, call.F, call.K, interpret, pool=b.pool != "none",
                                heavy=b.has_prologue or b.prepool_dtype is not None)
    if interpret or b.cast_w or call.x.dtype != torch.float32 or call.w.dtype != torch.float32:
        return configs
    return configs + [dict(c, KMAJOR=True) for c in configs[:KMAJOR_TILES]]


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Conv2DBinding(Binding):
    epilogue: object  # the generated @triton.jit EPILOGUE hook
    operands: tuple[Operand, ...]  # what EPILOGUE loads (E0..E3)
    prologue: object  # the generated PROLOGUE hook (a no-op when has_prologue is False)
    has_prologue: bool
    prologue_operands: tuple[Operand, ...]  # what PROLOGUE loads (P0, P1): scalars and per-channel vectors
    x: int  # which input is the NHWC image (what the prologue chain starts from)
    w: int  # which input is the (KH, KW, C, F) kernel
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: str  # "valid" or "same"
    pool: str  # the absorbed 'valid' pool: "max", "avg", or "none" (a 1x1 window, strides 1x1)
    pool_size: tuple[int, int]
    pool_strides: tuple[int, int]
    # With a pool, a training step also reads the pre-pool activation: it is the first output
    # (of this dtype), the pooled one the second. None: one output, the pooled one.
    prepool_dtype: torch.dtype | None
    out_dtype: torch.dtype  # the pooled output's
    cast_w: str = ""  # CAST_W: the 16-bit dtype the float32 kernel input is cast to as it loads; "": none


@dataclass(kw_only=True)
class Conv2DCall(Call):
    x: torch.Tensor  # contiguous
    w: torch.Tensor  # contiguous
    y: torch.Tensor  # the pooled output
    prepool: torch.Tensor  # the pre-pool output, or y where there is none (PREPOOL goes unused)
    operand_args: list  # P0, P1, T0, T1, E0..E3, S0..S3
    H: int
    W: int
    C: int
    F: int
    K: int  # KH * KW * C: the GEMM's reduction
    KW: int
    CH: int  # the conv output, before any pool
    CW: int
    OH: int  # the pooled output (CH, CW with no pool)
    OW: int
    M: int  # N * OH * OW: the GEMM's rows
    pad_top: int
    pad_left: int


def launch(binding: Conv2DBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x is NHWC (N, H, W, C); the kernel (KH, KW, C, F) is read as a row-major (KH*KW*C, F) matrix.
    tensors = list(inputs)
    x = tensors[binding.x].contiguous()
    w = tensors[binding.w].contiguous()
    N, H, W, C = x.shape
    KH, KW, C_in, F = w.shape
    if C_in != C:
        raise ValueError(f"conv2d: input {tuple(x.shape)} has {C} channels, kernel {tuple(w.shape)} expects {C_in}")
    contiguous_operands(tensors, binding.prologue_operands + binding.operands)
    CH, CW, pad_top, pad_left = sliding_window(H, W, (KH, KW), binding.strides, binding.dilation, binding.padding)
    (ph, pw), (psh, psw) = binding.pool_size, binding.pool_strides
    OH, OW = (CH - ph) // psh + 1, (CW - pw) // psw + 1  # the 'valid' pool's windows (CH, CW without a pool)
    # allocate
    if out is None:
        y = torch.empty((N, OH, OW, F), device=x.device, dtype=binding.out_dtype)
        if binding.prepool_dtype is None:
            out = y
        else:
            out = (torch.empty((N, CH, CW, F), device=x.device, dtype=binding.prepool_dtype), y)
    prepool, y = out if binding.prepool_dtype is not None else (out, out)
    call = Conv2DCall(
        binding, inputs, out, x=x, w=w, y=y, prepool=prepool,
        operand_args=(tile_operand_args(tensors, binding.prologue_operands, PROLOGUE_OPERANDS, y)
                      + tile_operand_args(tensors, binding.operands, EPILOGUE_OPERANDS, y)),
        H=H, W=W, C=C, F=F, K=KH * KW * C, KW=KW, CH=CH, CW=CW, OH=OH, OW=OW, M=N * OH * OW,
        pad_top=pad_top, pad_left=pad_left,
    )
    run(call, config, interpret, precision=precision)
    return out


@tuned(conv_candidates)
def run(call: Conv2DCall, config: dict, precision: str):
    b = call.binding
    k_major = config.get("KMAJOR", False)
    w = call.w.reshape(call.K, call.F).t().contiguous() if k_major else call.w
    conv2d_kernel[gemm_grid(call.M, call.F, config)](
        call.x, w, call.y, call.prepool,
        call.H, call.W, call.C, call.F, call.K, call.KW,
        call.CH, call.CW, call.OH, call.OW, call.M,
        *b.strides, *b.dilation, call.pad_top, call.pad_left,
        *call.operand_args,
        PROLOGUE=b.prologue, HAS_PROLOGUE=b.has_prologue, EPILOGUE=b.epilogue, POOL=b.pool, PH=b.pool_size[0], PW=b.pool_size[1],
        PSH=b.pool_strides[0], PSW=b.pool_strides[1],
        STORE_PREPOOL=b.prepool_dtype is not None, CAST_W=b.cast_w, W_KMAJOR=k_major, PRECISION=precision,
        **kernel_options(config),
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _takes_epilogue(node) -> bool:
    return node.op == "conv2d" and node.attrs["groups"] == 1


def _windows_cover(pool, v) -> bool:
    """Whether a 'valid' pool's windows cover every pixel of its NHWC input v."""
    if pool.attrs["padding"] != "valid" or v.rank != 4 or not all(is_static(d) for d in v.shape[1:3]):
        return False
    return all(
        stride <= size and (extent - size) % stride == 0
        for extent, size, stride in zip(v.shape[1:3], pool.attrs["pool_size"], pool.attrs["strides"])
    )


def _claim_prologue(fusion, node):
    """The elementwise ops that produced the conv's image (a Rescaling, a Normalization), computed
    as each window tile loads, when they read only scalars and per-channel vectors besides it (the
    prologue indexes its operands by channel) and draw nothing random."""
    if not _takes_epilogue(node):
        return None
    chain = fusion.prologue_chain(node, PROLOGUE_OPERANDS)
    made = {v.id for n in chain for v in n.outputs} | ({chain_input(chain).id} if chain else set())
    channelwise = all(
        "random" not in OPS[n.op].traits
        and all(x.id in made or operand_kind(x, n.outputs[0]) in ("scalar", "col") for x in n.inputs)
        for n in chain
    )
    # last: the kernel's float32 -> 16-bit cast, done as the filter loads (CAST_W), when this conv alone reads it
    return [*(chain if channelwise else []), *fusion.loaded_cast(node, 1)] or None


def _group(fusion, node):
    """The conv (with its claimed prologue), the elementwise chain after it, and a following
    'valid' pool (the pre-pool activation then never reaches memory)."""
    if not _takes_epilogue(node):
        return None
    prologue = fusion.claimed_prologue(node)
    nodes = [node]
    v = fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    chain = {n.outputs[0].id for n in nodes}
    # Against the conv's output, not each node's: a bias's cast (mixed precision) reads a vector.
    reads_full = any(
        operand_kind(x, v) == "full" for n in nodes[1:] for x in n.inputs if x.id not in chain
    )
    pool = fusion.sole_user(v)
    if pool is None:
        # Read by others too (a training step's pool and activation gradients): the kernel
        # can still pool, storing the pre-pool activation as a second output, when the
        # windows cover every pixel of it.
        pools = [u for u in fusion.users_of(v) if u.op in POOLS and fusion.is_free(u)]
        pool = pools[0] if len(pools) == 1 and _windows_cover(pools[0], v) else None
    if pool is not None and pool.op in POOLS and pool.attrs["padding"] == "valid" and not reads_full:
        nodes.append(pool)
    return Group(node, prologue, epilogue=nodes[1:])


TEMPLATES = (Template("conv2d", launch, Conv2DBinding, tensor_cores=True, group=_group, priority=20,
                      claim_prologue=_claim_prologue, takes_epilogue=_takes_epilogue),)
