"""Row templates: softmax / log_softmax and layer_norm over the last axis.

Each program normalizes ROWS rows; a row is held whole in registers (BLOCK is
the next power of two of its length), so each element is read once and
written once. Rows longer than kcomp.passes.fuse.MAX_ROW are not fused.
"""

import triton
import triton.language as tl


@triton.jit
def softmax_kernel(X, Y, n_rows, n_cols, LOG: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    col_mask = cols[None, :] < n_cols
    mask = (rows[:, None] < n_rows) & col_mask
    # Rows past the end read the last row (and are not stored), so no row is all -inf.
    safe_rows = tl.minimum(rows, n_rows - 1)
    x = tl.load(X + safe_rows[:, None].to(tl.int64) * n_cols + cols[None, :], mask=col_mask, other=-float("inf"))
    x = x.to(tl.float32)
    offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    # tl.max passes a NaN over, but the row still comes out NaN, as torch's: exp(NaN) enters the sum.
    shifted = x - tl.max(x, axis=1)[:, None]
    e = tl.exp(shifted)
    total = tl.sum(e, axis=1)[:, None]
    y = shifted - tl.log(total) if LOG else e / total
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def layer_norm_kernel(
    X, Y, GAMMA, BETA, n_rows, n_cols, eps,
    SCALE: tl.constexpr, CENTER: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    col_mask = cols < n_cols
    mask = (rows[:, None] < n_rows) & col_mask[None, :]
    offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / n_cols
    centered = tl.where(mask, x - mean[:, None], 0.0)
    var = tl.sum(centered * centered, axis=1) / n_cols  # biased, as Keras
    y = centered * tl.rsqrt(var + eps)[:, None]
    if SCALE:
        y = y * tl.load(GAMMA + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if CENTER:
        y = y + tl.load(BETA + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


def row_config(n_cols: int, interpret: bool) -> dict:
    """BLOCK covers a row; short rows pack several per program so a program has enough work."""
    block = triton.next_power_of_2(max(n_cols, 1))
    rows = max(1, min(64 if interpret else 16, 4096 // block))
    return dict(BLOCK=block, ROWS=rows, num_warps=4 if block <= 2048 else 8)


def grid(n_rows: int, config: dict) -> tuple[int]:
    return (triton.cdiv(n_rows, config["ROWS"]),)
