"""Tiling shared by the GEMM templates (matmul, conv2d, conv2d_grad): the tile order of a
program, the grid of tiles, and how a block-size config becomes launch keywords."""

import triton
import triton.language as tl

from kcomp.kernels.sizes import cdiv


@triton.jit
def grouped_tile(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
    """(tile_m, tile_n) of program `pid`: GROUP_M row tiles in a row share the same
    column tiles while they run, so B's columns are read from L2, not HBM
    (the ordering of Triton's matrix-multiplication tutorial)."""
    tiles_m = tl.cdiv(M, BM)
    tiles_n = tl.cdiv(N, BN)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_size = tl.minimum(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (pid % per_group) % group_size
    tile_n = (pid % per_group) // group_size
    return tile_m, tile_n


def gemm_grid(M: int, N: int, config: dict, matrices: int = 1) -> tuple[int]:
    """One program per BM x BN tile of an M x N result (grouped_tile orders them), of each of
    `matrices` results (a batched matmul's: one axis, matrix after matrix)."""
    return (cdiv(M, config["BM"]) * cdiv(N, config["BN"]) * matrices,)


# Config keys that choose how a template launches (matmul's TMA kernel, its K-major copies, the
# conv's K-major kernel: kernels/matmul_configs.py, conv2d.py), read by the launch, not kernel arguments.
LAUNCH_MODES = ("TMA", "KMAJOR")


def kernel_options(config: dict) -> dict:
    """A config as launch keywords: its block sizes (constexprs), then num_warps and num_stages;
    its LAUNCH_MODES left out."""
    meta = {k: v for k, v in config.items() if k not in ("num_warps", "num_stages", *LAUNCH_MODES)}
    return dict(meta, num_warps=config["num_warps"], num_stages=config["num_stages"])
