"""Tile order shared by the GEMM templates (matmul, conv2d)."""

import triton
import triton.language as tl


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
