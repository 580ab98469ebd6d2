"""Which block-size configs the matmul template's autotuning tries for a call (kernels/matmul.py).

A config is matmul_kernel's tile (BM, BN, BK, GROUP_M, num_warps, num_stages), and may carry two
launch modes that the launch reads and the kernels do not take (tiling.LAUNCH_MODES):
  TMA: matmul_tma_kernel (persistent, loads through TMA descriptors) on compute capability 9.0+;
  KMAJOR: the operands copied K-major first (A (M, K) row-major, B (K, N) column-major), for
    float32 products. Hopper's TF32 wgmma (and mma.sync's ldmatrix, which moves 16-bit elements
    only) takes both operands K-major from shared memory: compiled for sm_90, a row-major B makes
    matmul_kernel copy B 4 bytes at a time (100 cp.async against 40) and the TMA kernel transpose
    it through shared memory at every K step (48 st.shared / 36 ld.shared against 32 / 32);
    bench/RESULTS.md, 2026-12-04. A Dense's weight (K, N) is row-major, and the weight
    gradient's x^T and dz are both read across their rows. The copy is one pass over each operand
    (a K x N weight: 64 MB at 4096^2), where the transposes in the loop happen once per row of
    tiles; autotuning times the copy with the kernel and keeps it only where it pays.
Off the GPU (the interpreter) there is one config, and neither mode is offered.
"""

import torch

from kcomp.kernels.sizes import next_power_of_2

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
# Tiles for large products only (M*N at least LARGE_TILES_FROM, K at least 512): with 16-bit
# operands a deeper K step and a wider tile feed Hopper's warpgroup MMA with fewer loads per FLOP.
# Float32 operands need twice the shared memory, so some of these do not fit a GPU's (sm_90: 227 KB)
# and autotuning skips them there (OutOfResources). Small problems never try them: a 128x256 tile
# would leave most of an H200's 132 SMs idle, and each candidate costs a compile at the first launch.
LARGE_CONFIGS = [
    dict(BM=128, BN=256, BK=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=256, BN=128, BK=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BM=128, BN=128, BK=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=5),
]
LARGE_TILES_FROM = 2048 * 2048
# matmul_tma_kernel's tiles, tried with the large ones on a GPU with a TMA (compute capability 9.0
# and up) where the product is plain (plain_and_aligned). The bfloat16 large shapes ran at
# 0.83-0.93x of cuBLAS with matmul_kernel's cp.async loads (bench/RESULTS.md, 2026-12-04); Triton's
# persistent TMA matmul tutorial is the model.
TMA_CONFIGS = [
    dict(TMA=True, BM=128, BN=256, BK=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(TMA=True, BM=128, BN=128, BK=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(TMA=True, BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=4),
]
# Large float32 products with an operand that is not K-major: the tiles that fit float32 in sm_90's
# shared memory (compiled here: 128x128x32 in 4 stages is 128 KB), on copies made K-major.
KMAJOR_CONFIGS = [
    dict(KMAJOR=True, BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=4),
    dict(KMAJOR=True, BM=128, BN=64, BK=32, GROUP_M=8, num_warps=8, num_stages=4),
]
KMAJOR_TMA_CONFIGS = [dict(TMA=True, KMAJOR=True, BM=128, BN=128, BK=32, GROUP_M=8, num_warps=8, num_stages=4)]
INTERPRETER_CONFIG = dict(BM=32, BN=32, BK=32, GROUP_M=4, num_warps=4, num_stages=1)


def candidate_configs(M: int, N: int, K: int, interpret: bool, whole_rows: bool = False) -> list[dict]:
    """Configs worth trying for this shape: tiles no larger than the problem needs.

    whole_rows: every row of C must fit one tile (BN >= N), for an epilogue that
    normalizes rows (Dense with a softmax activation).
    """
    if whole_rows:
        bn = max(32, next_power_of_2(N))
        base = INTERPRETER_CONFIG if interpret else dict(BM=64, BK=32, GROUP_M=8, num_warps=4, num_stages=3)
        return [{**base, "BN": bn, "BM": min(base["BM"], max(16, 4096 // bn))}]
    if interpret:
        return [INTERPRETER_CONFIG]
    # Rows: at least 64, the smallest tile Hopper's warpgroup MMA (wgmma) computes; a 32-row tile
    # falls back to mma.sync there (a weight gradient x^T g over 32 features was one: HMMA, not HGMMA).
    fitting = [c for c in GPU_CONFIGS if c["BM"] <= max(64, next_power_of_2(M)) and c["BN"] <= max(32, next_power_of_2(N))]
    return (fitting or GPU_CONFIGS[-2:]) + (LARGE_CONFIGS if is_large(M, N, K) else [])


def is_large(M: int, N: int, K: int) -> bool:
    """Whether a product is large enough for LARGE_CONFIGS, TMA_CONFIGS and KMAJOR_CONFIGS."""
    return M * N >= LARGE_TILES_FROM and K >= 512


def _plain(call) -> bool:
    """A Dense's product with nothing read another way: A read whole (no ids, no shift), no prologue,
    no cast of B, no column sums, B of rank 2."""
    bind = call.binding
    return not (call.ids is not None or bind.shift or bind.has_prologue or bind.cast_b
                or bind.column_sums_dtype is not None or call.b.dim() > 2)


def _descriptor_rows(t: torch.Tensor) -> bool:
    """Whether a 2-D tensor is row-major with rows that start on 16 bytes (a TMA descriptor's terms)."""
    return t.stride(-1) == 1 and t.stride(0) * t.element_size() % 16 == 0 and t.data_ptr() % 16 == 0


def plain_and_aligned(call) -> bool:
    """Whether matmul_tma_kernel can compute this call: a plain product of two matrices of one dtype,
    A row-major and B row-major or column-major (read through a descriptor of B^T), each with rows
    that start on 16 bytes."""
    a, b = call.a, call.b
    if not _plain(call) or a.dtype != b.dtype or a.dtype not in (torch.bfloat16, torch.float16, torch.float32):
        return False
    return _descriptor_rows(a) and (_descriptor_rows(b) or _descriptor_rows(b.t()))


def _has_tma(device: torch.device) -> bool:
    """A GPU with a tensor memory accelerator (compute capability 9.0 or later)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def tma_ready(call) -> bool:
    """plain_and_aligned, on a GPU with a TMA."""
    return _has_tma(call.a.device) and plain_and_aligned(call)


def _a_along_k(a: torch.Tensor) -> bool:
    """Whether A (M, K) runs along K in memory (row-major)."""
    return a.stride(-1) == 1


def _b_along_k(b: torch.Tensor) -> bool:
    """Whether B (K, N) runs along K in memory (column-major)."""
    return b.stride(-2) == 1


def is_k_major(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether A (M, K) and B (K, N) both run along K in memory."""
    return _a_along_k(a) and _b_along_k(b)


def k_major_copies(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A and B with the same values, each K-major: copied where it is not."""
    a = a if _a_along_k(a) else a.contiguous()
    b = b if _b_along_k(b) else b.t().contiguous().t()
    return a, b


def k_major_worth_trying(call) -> bool:
    """A float32 product (TF32 or IEEE) of two matrices, not gathered, with an operand not K-major."""
    a, b = call.a, call.b
    return (a.dtype == b.dtype == torch.float32 and not call.binding.cast_b and call.ids is None and b.dim() == 2
            and not is_k_major(a, b))


def matmul_candidates(call, interpret: bool) -> list[dict]:
    """candidate_configs for the call; on a GPU, for large products, also TMA_CONFIGS where the
    product is tma_ready, and KMAJOR_CONFIGS (and, on a TMA GPU where the copies are plain and
    aligned, KMAJOR_TMA_CONFIGS) where k_major_worth_trying. Autotuning keeps whichever is fastest."""
    configs = candidate_configs(call.M, call.N, call.K, interpret, call.binding.whole_rows)
    if interpret or call.binding.whole_rows or not is_large(call.M, call.N, call.K):
        return configs
    if tma_ready(call):
        configs = configs + TMA_CONFIGS
    if k_major_worth_trying(call):
        configs = configs + KMAJOR_CONFIGS
        if _has_tma(call.a.device) and _plain(call) and _aligned_after_copies(call):
            configs = configs + KMAJOR_TMA_CONFIGS
    return configs


def _aligned_after_copies(call) -> bool:
    """Whether k_major_copies of a float32 call give A and B^T rows on 16 bytes: a copy is a fresh
    (aligned) allocation whose rows are K floats, a tensor kept as it is must be aligned itself."""
    a, b = call.a, call.b
    copied_rows = call.K % 4 == 0
    return ((_descriptor_rows(a) if _a_along_k(a) else copied_rows)
            and (_descriptor_rows(b.t()) if _b_along_k(b) else copied_rows))
