"""Reduce template: sum, mean or max over a run of consecutive axes.

The input is viewed as a contiguous (outer, R, inner) array (the axes before,
inside and after the reduced run) and the output as (outer, inner); keepdims
only changes the output's shape, not its memory, so the launch handles it.
Global average / max pooling is mean / max over axes (1, 2) of NHWC:
outer = N, R = H * W, inner = C.

Hook: BODY(offs, mask, C, X0..X7) gives the input's values at flat indices
`offs` (a 2-D tile here): a load of X0, or the elementwise ops that produced
the input (a loss weighted per sample before its mean, a square before a sum),
generated as for the pointwise template, so that input never reaches memory.

Hook: EPILOGUE(y, offs, mask, C_OUT, E0..E3) takes the float32 results at their flat output
indices and returns what is stored: the elementwise ops after the reduction (a loss's mean
times the batch size added into the epoch's running sum), so the result never goes through
memory first; C_OUT is the output's last dimension, for operands broadcast along it.

A kernel module holds both hooks and a binding (the op, the reduced axes, keepdims, which
inputs each hook loads, the output dtype); its launch is this module's.

Each program owns BLOCK_OUT outputs (flat (o, i) indices) and walks R in
BLOCK_R chunks, accumulating elementwise in a float32 (BLOCK_R, BLOCK_OUT)
tile and reducing it once at the end. Loads of a chunk are contiguous along
the outputs when inner > 1 (channels) and along R when inner == 1 (a row
reduction); the configs below pick the tile shape for each case.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.kernel import kernel_parts
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import EPILOGUE_OPERANDS, FLAT_OPERANDS, Operand, contiguous_operands, flat_operand_args
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template

REDUCTIONS = ("sum", "mean", "max")  # the ops a reduce kernel's body reduces with (OP)


@triton.jit
def _maximum(a, b):
    """max that keeps a NaN, as torch.amax (tl.maximum and tl.max would drop it)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def reduce_kernel(
    Y, R, INNER, NUM_OUT, C, X0, X1, X2, X3, X4, X5, X6, X7, C_OUT, E0, E1, E2, E3,
    BODY: tl.constexpr, EPILOGUE: tl.constexpr, OP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_OUT: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    mask = offs < NUM_OUT
    outer = offs // INNER
    inner = offs % INNER
    base = outer * R * INNER + inner  # element (outer, 0, inner)
    if OP == "max":
        acc = tl.full((BLOCK_R, BLOCK_OUT), float("-inf"), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_R, BLOCK_OUT), dtype=tl.float32)
    for r0 in range(0, R, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        elements = base[None, :] + offs_r.to(tl.int64)[:, None] * INNER  # flat indices into the input
        m = (offs_r < R)[:, None] & mask[None, :]
        x = BODY(elements, m, C, X0, X1, X2, X3, X4, X5, X6, X7)  # the input's values (loaded or computed)
        if OP == "max":
            acc = _maximum(acc, tl.where(m, x, float("-inf")))
        else:
            acc += tl.where(m, x, 0.0)
    if OP == "max":
        y = tl.reduce(acc, 0, _maximum)
    else:
        y = tl.sum(acc, axis=0)
    if OP == "mean":
        y = y / R
    y = EPILOGUE(y, offs, mask, C_OUT, E0, E1, E2, E3)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


# Block sizes, as data, keyed on whether the reduced run is the innermost one
# (inner == 1: a row reduction, long BLOCK_R) or not (wide BLOCK_OUT over inner).
GPU_CONFIGS = {
    "rows": [dict(BLOCK_R=512, BLOCK_OUT=4, num_warps=4), dict(BLOCK_R=256, BLOCK_OUT=16, num_warps=8)],
    "columns": [dict(BLOCK_R=16, BLOCK_OUT=256, num_warps=4), dict(BLOCK_R=32, BLOCK_OUT=128, num_warps=4)],
}
INTERPRETER_CONFIG = dict(BLOCK_R=32, BLOCK_OUT=64, num_warps=4)


def candidate_configs(outer: int, R: int, inner: int, interpret: bool) -> list[dict]:
    if interpret:
        return [INTERPRETER_CONFIG]
    return GPU_CONFIGS["rows" if inner == 1 else "columns"]


def grid(num_out: int, config: dict) -> tuple[int]:
    return (max(1, cdiv(num_out, config["BLOCK_OUT"])),)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReduceBinding(Binding):
    body: object  # the generated BODY hook
    epilogue: object  # the generated EPILOGUE hook
    op: str  # one of REDUCTIONS
    axes: tuple[int, ...]  # the reduced axes of the input: consecutive, ascending; () reduces none (R = 1)
    keepdims: bool  # the output keeps the reduced axes, as 1s
    operands: tuple[Operand, ...]  # what BODY loads (X0..X7); the first full one has the input's shape
    epilogue_operands: tuple[Operand, ...]  # what EPILOGUE loads (X0..X3 there), at the output's indices
    out_dtype: torch.dtype


@dataclass
class ReduceCall(Call):
    x: torch.Tensor  # a tensor of the reduction's input shape (its first full operand)
    outer: int
    R: int
    inner: int


def launch(binding: ReduceBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the input (loaded, or computed in the kernel by the ops before the reduction) viewed
    # as contiguous (outer, R, inner), reducing binding.axes (R); the operands line up with it.
    tensors = list(inputs)
    contiguous_operands(tensors, binding.operands)
    x = tensors[next(o for o in binding.operands if o.kind == "full").input_index]
    contiguous_operands(tensors, binding.epilogue_operands)
    axes = binding.axes
    first, stop = (axes[0], axes[-1] + 1) if axes else (x.dim(), x.dim())
    # allocate: (outer, inner) in memory; keepdims only shapes it
    if out is None:
        kept = (1,) * (stop - first) if binding.keepdims else ()
        out = torch.empty((*x.shape[:first], *kept, *x.shape[stop:]), device=x.device, dtype=binding.out_dtype)
    call = ReduceCall(binding, inputs, out, x, x.shape[:first].numel(), x.shape[first:stop].numel(), x.shape[stop:].numel())
    run(call, config, interpret, args=flat_operand_args(tensors, binding.operands, FLAT_OPERANDS, x),
        epilogue_args=flat_operand_args(tensors, binding.epilogue_operands, EPILOGUE_OPERANDS, out))
    return out


@tuned(lambda call, interpret: candidate_configs(call.outer, call.R, call.inner, interpret))
def run(call: ReduceCall, config: dict, args: list, epilogue_args: list):
    x, out, num_out = call.x, call.out, call.outer * call.inner
    reduce_kernel[grid(num_out, config)](
        out, call.R, call.inner, num_out, x.shape[-1] if x.dim() else 1, *args,
        out.shape[-1] if out.dim() else 1, *epilogue_args,
        BODY=call.binding.body, EPILOGUE=call.binding.epilogue, OP=call.binding.op,
        BLOCK_R=config["BLOCK_R"], BLOCK_OUT=config["BLOCK_OUT"], num_warps=config["num_warps"],
    )


def _in_place(node, param, views) -> bool:
    """The output may go into param's buffer when it has param's shape and the kernel reads param
    or a view of it (`views`: their ids) only in its epilogue (at the output's own indices, where
    writing that output in place is safe), never as it loads its input (at the input's indices)."""
    if not all(v.shape == param.shape for v in node.outputs):
        return False
    parts = kernel_parts(node)
    return not any(v.id in views for n in (*parts.prologue, parts.anchor) for v in n.inputs)


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def reduced_axes(axes, rank: int) -> list[int]:
    """The registry's reading of a reduction's `axes` over an input of this rank, sorted: None is
    every axis, () none. Raises ValueError when they are not consecutive (one run is reduced)."""
    found = sorted(a % rank for a in (range(rank) if axes is None else axes))
    if found and found != list(range(found[0], found[-1] + 1)):
        raise ValueError(f"reduce template: axes {tuple(found)} are not consecutive")
    return found


def reduce_axes_fit(node) -> bool:
    """A sum / mean / max of floats over consecutive axes (at least one): what this template computes."""
    if node.op not in REDUCTIONS or node.inputs[0].dtype not in FLOAT_DTYPES:
        return False
    try:
        return bool(reduced_axes(node.attrs["axes"], node.inputs[0].rank))
    except ValueError:  # not consecutive
        return False


def _claim_prologue(fusion, node):
    """The elementwise ops computing the input, applied as it loads (a weighted loss before its mean)."""
    if fusion.is_free(node) and reduce_axes_fit(node):
        return fusion.prologue_chain(node, FLAT_OPERANDS - 1, trees=True)  # the chain's start is a load too
    return None


def _group(fusion, node):
    """The reduction, its claimed prologue, and the elementwise ops after it as its epilogue (a
    mean scaled and added into a running sum)."""
    if not reduce_axes_fit(node):
        return None
    prologue = fusion.claimed_prologue(node)
    nodes = [*prologue, node]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    return Group(node, prologue, nodes[len(prologue) + 1:])


TEMPLATES = (Template("reduce", launch, ReduceBinding, in_place=_in_place, group=_group, priority=50,
                      claim_prologue=_claim_prologue),)
