"""embedding: row lookup in a table; its gradient, and the sorted form the kernels compute it in.

embedding_grad is a scatter-add (repeated ids add up). The triton backends do not compute it
with float atomics, whose order of additions varies from run to run: the decompose pass
(kcomp/passes/decompose_embedding.py) rewrites it into sort_ids, a stable sort of the ids run
as a torch op in the plan, embedding_grad_chunks (each id's run cut into chunks of CHUNK sorted
indices, each piece summed in order of position) and embedding_grad_sorted (each row's pieces
summed in chunk order): the two embedding_grad templates (kernels/gather.py). The references
of those two compute that same order, so the kernels match them bit for bit. The reference
executor keeps embedding_grad whole (index_add_).
"""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float, require_rank, with_ids_in_range
from kcomp.ir.types import DTYPE_OF_TORCH, FLOAT_DTYPES, INT_DTYPES, TORCH_DTYPES, TensorSpec

def _embedding_infer(inputs):
    ids, table = inputs
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"embedding ids must be integers, received dtype {ids.dtype}; cast them first.")
    require_rank(table, 2, "embedding (table input_dim, output_dim)")
    return [TensorSpec(ids.shape + (table.shape[1],), table.dtype)]

def _embedding(ids, table):
    return with_ids_in_range(lambda: F.embedding(ids.long(), table), ids, table.shape[0], "embedding: ids",
                             "; raise input_dim or clip the ids")

def _embedding_vjp(b, node, grads):
    """ids get no gradient; the table's is a scatter-add of dy's rows at the ids (size known: a weight)."""
    (dy,) = grads
    ids, table = node.inputs
    return [None, b.emit1("embedding_grad", [ids, dy], input_dim=table.shape[0])]

# ---------------------------------------------------------------- its gradient


def _embedding_grad_infer(inputs, input_dim):
    ids, dy = inputs
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"embedding_grad ids must be integers, received dtype {ids.dtype}.")
    require_float(dy, "embedding_grad")
    if input_dim <= 0 or dy.rank != ids.rank + 1 or dy.shape[:-1] != ids.shape:
        raise ShapeError(
            f"embedding_grad: gradient {format_shape(dy.shape)} does not fit ids {format_shape(ids.shape)} "
            f"(expected the ids' shape plus one axis), or input_dim={input_dim} is not positive."
        )
    return [TensorSpec((input_dim, dy.shape[-1]), dy.dtype)]


def _embedding_grad(ids, dy, input_dim):
    """Scatter-add: row i of the table gradient sums dy over every position whose id is i."""
    rows = dy.reshape(-1, dy.shape[-1])
    return dy.new_zeros(input_dim, dy.shape[-1]).index_add_(0, ids.reshape(-1).long(), rows)


# ---------------------------------------------------------------- the sorted form of the gradient


def _sort_ids_infer(inputs):
    (ids,) = inputs
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"sort_ids: ids must be integers, received dtype {ids.dtype}.")
    return [TensorSpec(ids.shape, ids.dtype), TensorSpec(ids.shape, "int64")]


def _sort_ids(ids):
    """The flattened ids sorted stably (equal ids keep their order of position), and the flat
    position each came from; both laid back in ids' shape (only their flat order means anything)."""
    values, positions = torch.sort(ids.reshape(-1), stable=True)
    return values.reshape(ids.shape), positions.reshape(ids.shape)


# Positions per chunk of the sorted ids (kcomp/passes/decompose_embedding.py): part of the
# definition of the sum's order, so the bits do not depend on the backend nor the block sizes.
# About the square root of a frequent id's run (8000 for the seed's sentiment model at batch
# 32): 128 terms walked per chunk, then at most positions / 128 partials per row.
CHUNK = 128


def _accumulator(dtype: str) -> str:
    return "float64" if dtype == "float64" else "float32"


def _embedding_grad_chunks_infer(inputs, chunk):
    sorted_ids, positions, dy = inputs
    if positions.dtype != "int64" or positions.shape != sorted_ids.shape:
        raise ShapeError(f"embedding_grad_chunks: positions must be int64 of the ids' shape {format_shape(sorted_ids.shape)}, "
                         f"received {positions.dtype} {format_shape(positions.shape)}; they come from sort_ids.")
    if chunk < 1:
        raise ShapeError(f"embedding_grad_chunks: chunk must be a positive number of positions, received {chunk}.")
    _embedding_grad_infer([sorted_ids, dy], 1)  # checks the ids and dy
    return [TensorSpec(dy.shape, _accumulator(dy.dtype))]


def _segments(ids, chunk):
    """Per sorted index: whether it starts a segment (a run of one id inside one chunk)."""
    n = ids.numel()
    chunk_of = torch.arange(n, device=ids.device) // chunk
    starts = torch.ones(n, dtype=torch.bool, device=ids.device)
    starts[1:] = (ids[1:] != ids[:-1]) | (chunk_of[1:] != chunk_of[:-1])
    return starts


def _embedding_grad_chunks(sorted_ids, positions, dy, chunk):
    """At sorted index j: the sum, in order, of dy's rows at the sorted indices from the start of
    j's segment (its id's run, cut at multiples of `chunk`) up to j, in the accumulator's dtype.
    Computed as the kernel does: one step per index in a chunk, every chunk at once."""
    dim = dy.shape[-1]
    ids = sorted_ids.reshape(-1)
    n = ids.numel()
    terms = dy.reshape(-1, dim)[positions.reshape(-1)].to(TORCH_DTYPES[_accumulator(DTYPE_OF_TORCH[dy.dtype])])
    starts = _segments(ids, chunk)
    sums = torch.empty_like(terms)
    acc = terms.new_zeros(-(-n // chunk), dim)
    for k in range(min(chunk, n)):
        j = torch.arange(k, n, chunk, device=ids.device)
        acc = acc[: j.numel()]
        acc = torch.where(starts[j, None], 0.0, acc) + terms[j]
        sums[j] = acc
    return sums.reshape(dy.shape)


def _embedding_grad_sorted_infer(inputs, input_dim, chunk, dtype):
    sorted_ids, sums = inputs
    if sums.dtype not in ("float32", "float64") or sums.shape[:-1] != sorted_ids.shape or chunk < 1:
        raise ShapeError(f"embedding_grad_sorted: chunk sums {sums.dtype} {format_shape(sums.shape)} do not fit ids "
                         f"{format_shape(sorted_ids.shape)} (chunk={chunk}); they come from embedding_grad_chunks.")
    (out,) = _embedding_grad_infer([sorted_ids, sums], input_dim)
    return [TensorSpec(out.shape, dtype)]


def _embedding_grad_sorted(sorted_ids, sums, input_dim, chunk, dtype):
    """Row i: 0 + the last chunk sum of each of id i's segments, in chunk order; ids outside
    [0, input_dim) are left out."""
    ids = sorted_ids.reshape(-1).long()
    flat = sums.reshape(-1, sums.shape[-1])
    ends = torch.ones_like(ids, dtype=torch.bool)
    ends[:-1] = _segments(ids, chunk)[1:]
    keep = ends & (ids >= 0) & (ids < input_dim)
    out = flat.new_zeros(input_dim, flat.shape[-1]).index_add_(0, ids[keep], flat[keep])
    return out.to(TORCH_DTYPES[dtype])


OPS = [
    OpDef(
        name="embedding",
        doc="out[..., :] = table[ids[...], :] for integer ids in [0, input_dim).",
        num_inputs=(2, 2),
        attrs={},
        infer=_embedding_infer,
        reference=_embedding,
        vjp=_embedding_vjp,
        traits={"gather"},
    ),
    OpDef(
        name="embedding_grad",
        doc="Gradient of embedding with respect to its table: a zero (input_dim, output_dim) table with "
        "each row of dy added at its id (repeated ids add up).",
        num_inputs=(2, 2),
        attrs={"input_dim": attr(int)},
        infer=_embedding_grad_infer,
        reference=_embedding_grad,
        traits={"gather"},
    ),
    OpDef(
        name="sort_ids",
        doc="(sorted, positions): the flattened ids sorted stably and the flat position of each, both in ids' shape.",
        num_inputs=(1, 1),
        attrs={},
        infer=_sort_ids_infer,
        reference=_sort_ids,
        num_outputs=2,
        traits={"gather"},
    ),
    OpDef(
        name="embedding_grad_chunks",
        doc="From sort_ids' outputs and dy: at each sorted index, the running sum (float32, float64 for float64) of "
        "dy's rows over its segment up to it; a segment is a run of one id cut at multiples of chunk indices.",
        num_inputs=(3, 3),
        attrs={"chunk": attr(int, default=CHUNK)},
        infer=_embedding_grad_chunks_infer,
        reference=_embedding_grad_chunks,
        traits={"gather"},
    ),
    OpDef(
        name="embedding_grad_sorted",
        doc="embedding_grad from the sorted ids and embedding_grad_chunks' sums: row i of the (input_dim, output_dim) "
        "result adds the sum of each of id i's segments, in order (cast to dtype).",
        num_inputs=(2, 2),
        attrs={"input_dim": attr(int), "chunk": attr(int, default=CHUNK), "dtype": attr(str, choices=FLOAT_DTYPES)},
        infer=_embedding_grad_sorted_infer,
        reference=_embedding_grad_sorted,
        traits={"gather"},
    ),
]
