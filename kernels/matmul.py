"""Matmul template: C = EPILOGUE(A @ B), A (M, K), B (K, N), C (M, N).

The structure follows Triton's matrix-multiplication tutorial: each program
computes one BM x BN tile of C, walking K in BK steps with tl.dot (tensor
cores), and tiles are visited in groups of GROUP_M rows so that neighbouring
programs reuse the same B columns from L2. Edges are masked, so M, N and K can
be any size.

Hook: EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0..E3, S0..S3) runs on the
float32 accumulator tile before the store; codegen generates it from the IR
nodes the kernel absorbed (bias, activation, batch-norm scale/shift, residual).
E0..E3 are the extra tensors it reads, S0..S3 their row strides.
"""

import triton
import triton.language as tl

from kcomp.kernels.tiling import grouped_tile


@triton.jit
def matmul_kernel(
    A, B, C,
    M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    E0, E1, E2, E3, S0, S1, S2, S3,
    EPILOGUE: tl.constexpr,
    PRECISION: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
):
    tile_m, tile_n = grouped_tile(tl.program_id(0), M, N, BM, BN, GROUP_M)

    offs_m = tile_m * BM + tl.arange(0, BM)
    offs_n = tile_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # 64-bit row offsets: M x K and M x N may pass 2^31 elements.
    a_ptrs = A + offs_m[:, None].to(tl.int64) * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = B + offs_k[:, None] * stride_bk + offs_n[None, :] * stride_bn

    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        k_left = K - k * BK
        a = tl.load(a_ptrs, mask=mask_m[:, None] & (offs_k[None, :] < k_left), other=0.0)
        b = tl.load(b_ptrs, mask=(offs_k[:, None] < k_left) & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BK * stride_ak
        b_ptrs += BK * stride_bk

    acc = EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0, E1, E2, E3, S0, S1, S2, S3)
    c_ptrs = C + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(C.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


# Block sizes, as data. GPU configurations are autotuned among; the interpreter
# (CPU) runs one config sized for few programs, since each program is costly there.
GPU_CONFIGS = [
    # BK=32 keeps three float32 stages within every target's shared memory (96 KB; sm_89 has 99 KB);
    # 128-row tiles get 8 warps so the accumulator fits in registers without spilling.
    dict(BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=64, BK=32, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BM=64, BN=128, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=64, BN=64, BK=64, GROUP_M=8, num_warps=4, num_stages=3),
    dict(BM=64, BN=32, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BM=32, BN=64, BK=32, GROUP_M=8, num_warps=4, num_stages=4),
]
INTERPRETER_CONFIG = dict(BM=32, BN=32, BK=32, GROUP_M=4, num_warps=4, num_stages=1)


def candidate_configs(M: int, N: int, K: int, interpret: bool) -> list[dict]:
    """Configs worth trying for this shape: tiles no larger than the problem needs."""
    if interpret:
        return [INTERPRETER_CONFIG]
    fitting = [c for c in GPU_CONFIGS if c["BM"] <= max(32, triton.next_power_of_2(M)) and c["BN"] <= max(32, triton.next_power_of_2(N))]
    return fitting or GPU_CONFIGS[-2:]


def grid(M: int, N: int, config: dict) -> tuple[int]:
    return (triton.cdiv(M, config["BM"]) * triton.cdiv(N, config["BN"]),)
