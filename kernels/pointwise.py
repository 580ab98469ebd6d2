"""Pointwise template: OUT[i] = BODY(i) over a flat, contiguous output.

Hook: BODY(offs, mask, C, X0..X7) loads what it needs (a full tensor at offs,
a last-axis vector at offs % C, a scalar, or a value or last-axis vector per
image at offs // image size) and returns the value; codegen
generates it from a chain of elementwise IR nodes. One launch replaces one
kernel per op, so intermediate values never reach memory. `offs` is also the
flat element index from which dropout draws its mask (kernels/random.py).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import FLAT_OPERANDS, Operand, contiguous_operands, flat_operand_args, flat_operand_kind
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template


@triton.jit
def pointwise_kernel(OUT, numel, C, X0, X1, X2, X3, X4, X5, X6, X7, BODY: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    y = BODY(offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7)
    tl.store(OUT + offs, y.to(OUT.dtype.element_ty), mask=mask)


GPU_CONFIGS = [dict(BLOCK=1024, num_warps=4), dict(BLOCK=2048, num_warps=8), dict(BLOCK=4096, num_warps=8)]
INTERPRETER_CONFIG = dict(BLOCK=1024, num_warps=4)


def candidate_configs(numel: int, interpret: bool) -> list[dict]:
    return [INTERPRETER_CONFIG] if interpret else GPU_CONFIGS


def grid(numel: int, config: dict) -> tuple[int]:
    return (cdiv(numel, config["BLOCK"]),)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PointwiseBinding(Binding):
    body: object  # the generated @triton.jit BODY hook
    operands: tuple[Operand, ...]  # what BODY loads; at least one (a pointwise op reads a tensor)
    out_dtype: torch.dtype
    shape_from: int | None  # the input of the output's shape, read at run time (the batch varies)
    static_shape: tuple | None  # the output's shape when no input has it (shape_from is None)


@dataclass
class PointwiseCall(Call):
    numel: int
    last_dim: int  # C: the last dimension, for operands broadcast along it


def launch(binding: PointwiseBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: nothing to check at run time (codegen lined every operand up with the output: full,
    # last-axis vector, scalar or per image); make the operands contiguous and take the output's shape.
    tensors = list(inputs)
    contiguous_operands(tensors, binding.operands)
    shape = tuple(tensors[binding.shape_from].shape) if binding.shape_from is not None else binding.static_shape
    # allocate
    if out is None:
        out = torch.empty(shape, device=tensors[binding.operands[0].input_index].device, dtype=binding.out_dtype)
    call = PointwiseCall(binding, inputs, out, out.numel(), shape[-1] if len(shape) else 1)
    run(call, config, interpret, args=flat_operand_args(tensors, binding.operands, FLAT_OPERANDS, out))
    return out


@tuned(lambda call, interpret: candidate_configs(call.numel, interpret))
def run(call: PointwiseCall, config: dict, args: list):
    pointwise_kernel[grid(call.numel, config)](
        call.out, call.numel, call.last_dim, *args,
        BODY=call.binding.body, BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


def _in_place(node, param, views) -> bool:
    """Elementwise: each element is read where it is written, when the output has param's shape."""
    return all(v.shape == param.shape for v in node.outputs)


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _group(fusion, node):
    """Elementwise ops with a lowering, chained while the body's loads fit X0..X7; asked last,
    after every template that takes elementwise ops into its own prologue or epilogue."""
    if not fusion.is_pointwise(node) or not all(flat_operand_kind(v, node.outputs[0]) for v in node.inputs):
        return None
    first_loads = {v.id for v in node.inputs if not fusion.is_constant(v)}
    if len(first_loads) > FLAT_OPERANDS:
        return None
    nodes = [node]
    fusion.absorb_chain(nodes, FLAT_OPERANDS, first_loads, widen=True, kind_of=flat_operand_kind)
    return Group(node, epilogue=nodes[1:])


TEMPLATES = (Template("pointwise", launch, PointwiseBinding, in_place=_in_place, group=_group, priority=100),)
