"""The extra tensors a generated hook reads (its operands), and the kernel arguments they become.

A hook (a matmul's epilogue, a pointwise body) reads tensors beyond the template's own: a
bias, a residual, a batch-norm scale. Codegen decides which body input each one is, how it
lines up with the values the hook computes (`kind`), and its slot among the template's operand
arguments; the launch passes them as those arguments:

  epilogues of tile templates (matmul, conv2d, pool2d_grad): E0..E3 pointers then S0..S3 row
    strides; a reduction's epilogue gets E0..E3 as flat pointers (X0..X3 in its hook, with C_OUT,
    the output's last dimension);
  prologues of tile templates (matmul's A tiles, conv2d_grad_filter's dY tiles): P0, P1
    pointers then T0, T1 row strides;
  flat templates (pointwise, a reduction's input): X0..X7 pointers (with C, the last dimension).

A pointwise body also reads per-image operands (flat_operand_kind): one value, or one last-axis
vector, per entry of the output's first axis (a RandomContrast factor (B, 1, 1, 1), a per-image
channel mean (B, 1, 1, C) against (B, H, W, C)), at offs // (the static size of one image).

Unused slots get a tensor the kernel never reads through them (its output) and stride 0.
"""

from dataclasses import dataclass

EPILOGUE_OPERANDS = 4  # operands an epilogue may read (E0..E3): matmul, conv2d, reduce, pool2d_grad
PROLOGUE_OPERANDS = 2  # operands a tile prologue may read (P0, P1): matmul, conv2d_grad_filter
FLAT_OPERANDS = 8  # tensors a flat body may read (X0..X7): pointwise, a reduction's input


@dataclass(frozen=True)
class Operand:
    input_index: int  # which input of the kernel node
    kind: str  # "full" (the output's shape), "col" (a last-axis vector), "scalar"; "image", "image_col" (flat only)
    slot: int  # its argument: E<slot>, P<slot> or X<slot>


def contiguous_operands(inputs: list, operands) -> None:
    """Make every operand's tensor contiguous in `inputs` (the generated loads assume it)."""
    for o in operands:
        inputs[o.input_index] = inputs[o.input_index].contiguous()


def tile_operand_args(inputs, operands, count: int, unused) -> list:
    """E0..E<count-1> then S0..S<count-1>: each operand's tensor and, for a full one, its row stride."""
    pad = count - len(operands)
    pointers = [inputs[o.input_index] for o in operands] + [unused] * pad
    strides = [inputs[o.input_index].shape[-1] if o.kind == "full" else 0 for o in operands] + [0] * pad
    return pointers + strides


def flat_operand_args(inputs, operands, count: int, unused) -> list:
    """X0..X<count-1>: each operand's tensor, `unused` for the rest."""
    return [inputs[o.input_index] for o in operands] + [unused] * (count - len(operands))


def operand_kind(operand, out) -> str | None:
    """How an operand (an IR value) lines up with the output `out`: "scalar", "col" (a last-axis
    vector), "full", or None (no template can load it at the output's indices)."""
    if operand.shape == () or all(d == 1 for d in operand.shape):
        return "scalar"
    if operand.shape == out.shape:
        return "full"
    lead, last = operand.shape[:-1], operand.shape[-1:]
    if last == out.shape[-1:] and all(d == 1 for d in lead) and len(operand.shape) <= len(out.shape):
        return "col"
    return None


def flat_operand_kind(operand, out) -> str | None:
    """operand_kind, or for a pointwise body also "image" (one value per entry of out's first axis:
    (B, 1, .., 1)) and "image_col" (a last-axis vector per entry: (B, 1, .., 1, C)), where one
    entry's size (out's other dimensions) is static: the body indexes them at offs // that size."""
    kind = operand_kind(operand, out)
    if kind is not None or operand.rank != out.rank or out.rank < 2 or operand.shape[0] != out.shape[0]:
        return kind
    inner = out.shape[1:]
    if not all(isinstance(d, int) for d in inner) or any(d != 1 for d in operand.shape[1:-1]):
        return None
    if operand.shape[-1] == 1:
        return "image"
    return "image_col" if operand.shape[-1] == out.shape[-1] else None


def image_size(out) -> int:
    """Elements of one entry of out's first axis (static, as flat_operand_kind checked)."""
    size = 1
    for d in out.shape[1:]:
        size *= d
    return size


def chain_input(chain):
    """The value a chain of elementwise nodes starts from: the first node's input of the
    chain's shape (the others are operands: scalars, vectors, other tensors)."""
    first = chain[0]
    out = first.outputs[0]
    return next((x for x in first.inputs if x.shape == out.shape), first.inputs[0])
