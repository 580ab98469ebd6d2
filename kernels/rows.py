"""Row templates: softmax / log_softmax and layer_norm over the last axis.

Each program normalizes ROWS rows; a row is held whole in registers (BLOCK is
the next power of two of its length), so each element is read once and
written once. Rows longer than MAX_ROW are not fused.

No generated hook: a kernel module's binding holds which inputs are which, the
op's attributes (log, epsilon) and the output dtype, and its launch is this
module's launch_softmax or launch_layer_norm. The softmax cross-entropy
template (kernels/softmax_xent.py) shares the block sizes, grid and row
checks below.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.types import is_static
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template


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
    block = next_power_of_2(max(n_cols, 1))
    rows = max(1, min(64 if interpret else 16, 4096 // block))
    return dict(BLOCK=block, ROWS=rows, num_warps=4 if block <= 2048 else 8)


def grid(n_rows: int, config: dict) -> tuple[int]:
    return (cdiv(n_rows, config["ROWS"]),)


def row_candidates(call, interpret: bool) -> list[dict]:
    """The one config for a row call (any Call with n_cols): row_config, as a list for `tuned`."""
    return [row_config(call.n_cols, interpret)]


def rows_of(x) -> tuple[int, int]:
    """(n_rows, n_cols) of a contiguous tensor whose rows are its last axis."""
    n_cols = x.shape[-1]
    return x.numel() // max(n_cols, 1), n_cols


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SoftmaxBinding(Binding):
    x: int  # which input holds the rows
    log: bool  # log_softmax
    out_dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class LayerNormBinding(Binding):
    x: int  # which input holds the rows
    gamma: int | None  # which input is the scale (None: the layer does not scale, SCALE false)
    beta: int | None  # which input is the offset (None: the layer does not center, CENTER false)
    epsilon: float
    out_dtype: torch.dtype


@dataclass
class RowsCall(Call):
    x: torch.Tensor  # the rows (the binding's x), contiguous
    n_rows: int
    n_cols: int


def _rows_call(binding, inputs, out) -> RowsCall:
    """Check and allocate, as both row templates do: the output has the input's shape."""
    # check: rows are the last axis of a contiguous tensor.
    x = inputs[binding.x].contiguous()
    # allocate
    if out is None:
        out = torch.empty(x.shape, device=x.device, dtype=binding.out_dtype)
    return RowsCall(binding, inputs, out, x, *rows_of(x))


def launch_softmax(binding: SoftmaxBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    call = _rows_call(binding, inputs, out)
    run_softmax(call, config, interpret)
    return call.out


@tuned(row_candidates)
def run_softmax(call: RowsCall, config: dict):
    softmax_kernel[grid(call.n_rows, config)](
        call.x, call.out, call.n_rows, call.n_cols, LOG=call.binding.log,
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


def launch_layer_norm(binding: LayerNormBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    call = _rows_call(binding, inputs, out)
    run_layer_norm(call, config, interpret)
    return call.out


@tuned(row_candidates)
def run_layer_norm(call: RowsCall, config: dict):
    b = call.binding
    # An absent gamma or beta is passed as x, which the kernel does not read (SCALE / CENTER false).
    gamma = call.inputs[b.gamma] if b.gamma is not None else call.x
    beta = call.inputs[b.beta] if b.beta is not None else call.x
    layer_norm_kernel[grid(call.n_rows, config)](
        call.x, call.out, gamma, beta, call.n_rows, call.n_cols, b.epsilon,
        SCALE=b.gamma is not None, CENTER=b.beta is not None,
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
MAX_ROW = 16384  # widest row one program holds (BLOCK is its next power of two)


def row_fits(x) -> bool:
    """Whether a row (the last axis) of x is static and fits one program."""
    last = x.shape[-1] if x.rank else None
    return last is not None and is_static(last) and last <= MAX_ROW


def _softmax_group(fusion, node):
    if node.op in ("softmax", "log_softmax"):
        x = node.inputs[0]
        if node.attrs["axis"] % x.rank == x.rank - 1 and row_fits(x):
            return Group(node)
    return None


def _layer_norm_group(fusion, node):
    if node.op == "layer_norm":
        x = node.inputs[0]
        if tuple(a % x.rank for a in node.attrs["axes"]) == (x.rank - 1,) and row_fits(x):
            return Group(node)
    return None


TEMPLATES = (
    Template("softmax", launch_softmax, SoftmaxBinding, group=_softmax_group, priority=30),
    Template("layer_norm", launch_layer_norm, LayerNormBinding, group=_layer_norm_group, priority=31),
)
