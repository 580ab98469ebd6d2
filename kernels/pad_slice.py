"""Pad-slice template: zeros padded around x and/or x cropped (the IR's pad and slice ops, one axis
each, any chain of them), with the elementwise ops before (as x loads) and after (before the store)
in the same launch: ZeroPadding1D/2D, Cropping1D/2D, Conv2DTranspose's crop, and their gradients
(a pad's is a slice, a slice's a pad).

A chain of pads and slices along static axes is, per axis of the output, an index map into x:
source s = d + OFFSET, read where LOW <= s < HIGH (x's own range, narrowed by every pad on the way:
a slice of a pad of a slice reads zeros where the pad put them). Each program computes BLOCK output
elements at flat indices; every element decodes its coordinates (up to 5 axes: a smaller rank gets
leading axes of 1), maps them, and reads x there or gives 0.

Hook: PROLOGUE(offs, mask, C, X0..X7) gives x's values at its flat indices `offs` (masked where the
map reads nothing): a load of X0, or the elementwise ops that compute x, generated as a pointwise
kernel's body, so x never reaches memory (an activation's gradient before a crop's gradient pad).
Hook: EPILOGUE(y, offs, mask, C_OUT, E0..E3) takes the moved values at the output's flat indices and
returns what is stored (a pad followed by an add). A value the map reads nothing for is 0 before the
epilogue, whatever the prologue computes at the masked loads (log(0) does not leak into the pad).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import EPILOGUE_OPERANDS, FLAT_OPERANDS, Operand, contiguous_operands, flat_operand_args
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template

MOVES = ("pad", "slice")  # the ops one kernel's index map composes
RANK = 5  # axes the kernel decodes; a tensor of higher rank stays on torch


@triton.jit
def _source(d, offset, low, high, inside):
    """An axis of the map: x's coordinate for output coordinate d, and whether it is read."""
    s = d + offset
    return s, inside & (s >= low) & (s < high)


@triton.jit
def pad_slice_kernel(
    OUT, numel, O1, O2, O3, O4, I1, I2, I3, I4, F0, F1, F2, F3, F4, L0, L1, L2, L3, L4, H0, H1, H2, H3, H4,
    C, X0, X1, X2, X3, X4, X5, X6, X7, C_OUT, E0, E1, E2, E3,
    PROLOGUE: tl.constexpr, EPILOGUE: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    d4 = offs % O4
    rest = offs // O4
    d3 = rest % O3
    rest = rest // O3
    d2 = rest % O2
    rest = rest // O2
    d1 = rest % O1
    d0 = rest // O1
    s0, inside = _source(d0, F0, L0, H0, mask)
    s1, inside = _source(d1, F1, L1, H1, inside)
    s2, inside = _source(d2, F2, L2, H2, inside)
    s3, inside = _source(d3, F3, L3, H3, inside)
    s4, inside = _source(d4, F4, L4, H4, inside)
    src = tl.where(inside, (((s0 * I1 + s1) * I2 + s2) * I3 + s3) * I4 + s4, 0)
    x = PROLOGUE(src, inside, C, X0, X1, X2, X3, X4, X5, X6, X7)
    y = tl.where(inside, x, 0.0)  # padding is zeros, whatever the prologue makes of its masked loads
    y = EPILOGUE(y, offs, mask, C_OUT, E0, E1, E2, E3)
    tl.store(OUT + offs, y.to(OUT.dtype.element_ty), mask=mask)


# Block sizes, as data: one flat block per program; the interpreter's wide (few programs).
GPU_CONFIGS = [dict(BLOCK=1024, num_warps=4), dict(BLOCK=2048, num_warps=8)]
INTERPRETER_CONFIG = dict(BLOCK=4096, num_warps=4)


def candidate_configs(interpret: bool) -> list[dict]:
    return [INTERPRETER_CONFIG] if interpret else GPU_CONFIGS


# --- the index map ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisMap:
    """One axis of a chain of pads and slices: source = output + offset, read where low <= source
    < high; `size` is the output's (None: the input's, an axis no op of the chain touches)."""

    offset: int = 0
    low: int = 0
    high: int | None = None  # None: the input's size (read at run time)
    size: int | None = None


def compose(node, maps: list) -> list:
    """`maps` (one AxisMap per axis, from the chain's output so far back to x) extended by one more
    pad or slice `node` of that output."""
    a = node.attrs
    axis = a["axis"] % node.inputs[0].rank
    m = maps[axis]
    size = node.inputs[0].shape[axis]  # static: the op's shape rule requires it
    maps = list(maps)
    if node.op == "slice":
        maps[axis] = AxisMap(m.offset + a["start"], m.low, m.high, a["stop"] - a["start"])
    else:  # a pad: what it reads of its input lies at [before, before + size) of its output
        high = m.offset + size if m.high is None else min(m.high, m.offset + size)
        maps[axis] = AxisMap(m.offset - a["before"], max(m.low, m.offset), high, size + a["before"] + a["after"])
    return maps


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PadSliceBinding(Binding):
    prologue: object  # the generated PROLOGUE hook: x at flat indices
    epilogue: object  # the generated EPILOGUE hook
    operands: tuple[Operand, ...]  # what PROLOGUE loads (X0..X7), lined up with x
    epilogue_operands: tuple[Operand, ...]  # what EPILOGUE loads (X0..X3 there), lined up with the output
    axes: tuple[tuple, ...]  # the index map, one AxisMap's fields per axis of x (and of the output)
    shape_from: int | None  # an input of x's shape (the batch varies), or None: x's shape is static_shape
    static_shape: tuple | None
    out_dtype: torch.dtype


@dataclass
class PadSliceCall(Call):
    sizes: tuple  # (O1..O4, I1..I4, F0..F4, L0..L4, H0..H4): the map over 5 axes


def _padded(values, fill) -> list:
    return [fill] * (RANK - len(values)) + list(values)


def map_arguments(axes, in_shape) -> tuple[tuple, tuple]:
    """(the output's shape, the kernel's map arguments) for x of `in_shape` at run time."""
    out_shape = tuple(n if m.size is None else m.size for m, n in zip(axes, in_shape))
    outs, ins = _padded(out_shape, 1), _padded(in_shape, 1)
    offsets = _padded([m.offset for m in axes], 0)
    lows = _padded([m.low for m in axes], 0)
    highs = _padded([n if m.high is None else m.high for m, n in zip(axes, in_shape)], 1)
    return out_shape, (*outs[1:], *ins[1:], *offsets, *lows, *highs)


def launch(binding: PadSliceBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: x's shape from an input of that shape (or static); the operands contiguous, as loaded
    tensors = list(inputs)
    contiguous_operands(tensors, binding.operands)
    contiguous_operands(tensors, binding.epilogue_operands)
    in_shape = tuple(tensors[binding.shape_from].shape) if binding.shape_from is not None else binding.static_shape
    out_shape, sizes = map_arguments([AxisMap(*m) for m in binding.axes], in_shape)
    # allocate
    if out is None:
        device = tensors[binding.operands[0].input_index].device
        out = torch.empty(out_shape, device=device, dtype=binding.out_dtype)
    call = PadSliceCall(binding, inputs, out, sizes)
    run(call, config, interpret, args=flat_operand_args(tensors, binding.operands, FLAT_OPERANDS, out),
        epilogue_args=flat_operand_args(tensors, binding.epilogue_operands, EPILOGUE_OPERANDS, out))
    return out


@tuned(lambda call, interpret: candidate_configs(interpret))
def run(call: PadSliceCall, config: dict, args: list, epilogue_args: list):
    out, b = call.out, call.binding
    in_last = call.sizes[7]  # I4: x's last dimension, for its per-channel operands
    pad_slice_kernel[(max(1, cdiv(out.numel(), config["BLOCK"])),)](
        out, out.numel(), *call.sizes, in_last, *args, out.shape[-1] if out.dim() else 1, *epilogue_args,
        PROLOGUE=b.prologue, EPILOGUE=b.epilogue, BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------


def _moves(node) -> bool:
    return node.op in MOVES and node.inputs[0].dtype in FLOAT_DTYPES and 0 < node.inputs[0].rank <= RANK


# Readers that take a slice's strided view as it is (the matmul template reads A and B through
# strides; torch's concat copies once anyway), followed through transposes and reshapes that only
# add or drop axes of 1 (others copy a strided view: kcomp/ir/cost.py): a bare crop read only by
# them stays a view (kcomp/runtime/plan.py), as an LSTM's last h_t out of the sequence does.
STRIDED_READERS = ("matmul", "concat")


def _squeezed(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def _view_suffices(fusion, v) -> bool:
    """Whether every reader of v takes it as a strided view (a value only returned: the caller does)."""
    def as_strides(u) -> bool:
        if u.op == "reshape":
            return _squeezed(u.outputs[0].shape) == _squeezed(v.shape) and _view_suffices(fusion, u.outputs[0])
        if u.op == "transpose":  # a view of the view (a Dense's input transposed for its weight gradient)
            return _view_suffices(fusion, u.outputs[0])
        return u.op in STRIDED_READERS

    return all(as_strides(u) for u in fusion.users_of(v))


def _chain(fusion, node) -> list:
    """node and the pads and slices after it, each the sole reader of the one before."""
    chain = [node]
    while (user := fusion.sole_user(chain[-1].outputs[0])) is not None and _moves(user) and fusion.is_free(user):
        chain.append(user)
    return chain


def _claim_prologue(fusion, node):
    """The elementwise ops computing x, applied as it loads (a gradient's mask before a crop's pad)."""
    if fusion.is_free(node) and _moves(node) and not _moves_input(fusion, node):
        return fusion.prologue_chain(node, FLAT_OPERANDS - 1, trees=True)  # the chain's start is a load too
    return None


def _moves_input(fusion, node) -> bool:
    """Whether node's input comes from a pad or slice this template chains node after."""
    producer = fusion.producers.get(node.inputs[0].id)
    return producer is not None and _moves(producer) and fusion.sole_user(node.inputs[0]) is node


def _contiguous(chain) -> bool:
    """Whether a chain of slices leaves a contiguous view: each cuts an axis with only axes of 1
    before it (a GRU bias's row out of its (2, 3u)), so no reader copies it."""
    return all(all(d == 1 for d in n.inputs[0].shape[: n.attrs["axis"] % n.inputs[0].rank]) for n in chain)


def _group(fusion, node):
    """A chain of pads and slices, its claimed prologue and the elementwise ops after it. A bare
    chain of slices stays a view where that view is contiguous or its readers read it as strides
    (STRIDED_READERS)."""
    if not _moves(node):
        return None
    prologue = fusion.claimed_prologue(node)
    chain = _chain(fusion, node)
    nodes = [*prologue, *chain]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    epilogue = nodes[len(prologue) + len(chain):]
    bare = not prologue and not epilogue and all(n.op == "slice" for n in chain)
    if bare and (_contiguous(chain) or _view_suffices(fusion, chain[-1].outputs[0])):
        return None
    return Group(node, prologue, [*chain[1:], *epilogue])


TEMPLATES = (Template("pad_slice", launch, PadSliceBinding, group=_group, priority=61, claim_prologue=_claim_prologue),)
