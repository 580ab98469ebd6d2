"""embedding: row lookup in a table; its gradient, and the sorted form the kernels compute it in.

embedding_grad is a scatter-add (repeated ids add up). The triton backends do not compute it
with float atomics, whose order of additions varies from run to run: the decompose pass
(kcomp/passes/decompose_embedding.py) rewrites it into sort_ids, a stable sort of the ids run
as a torch op in the plan, and embedding_grad_sorted, which the embedding_grad template
(kernels/gather.py) sums row by row in position order. The reference executor keeps
embedding_grad whole (index_add_).
"""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import can_read_back, require_float, require_rank
from kcomp.ir.types import INT_DTYPES, TensorSpec

def _embedding_infer(inputs):
    ids, table = inputs
    if ids.dtype not in INT_DTYPES:
        raise ShapeError(f"embedding ids must be integers, received dtype {ids.dtype}; cast them first.")
    require_rank(table, 2, "embedding (table input_dim, output_dim)")
    return [TensorSpec(ids.shape + (table.shape[1],), table.dtype)]

def _embedding(ids, table):
    if ids.numel() and can_read_back(ids) and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
        raise ShapeError(
            f"embedding: ids must lie in [0, {table.shape[0]}), received values from {int(ids.min())} "
            f"to {int(ids.max())}; raise input_dim or clip the ids."
        )
    return F.embedding(ids.long(), table)

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


def _embedding_grad_sorted_infer(inputs, input_dim):
    sorted_ids, positions, dy = inputs
    if positions.dtype != "int64" or positions.shape != sorted_ids.shape:
        raise ShapeError(f"embedding_grad_sorted: positions must be int64 of the ids' shape {format_shape(sorted_ids.shape)}, "
                         f"received {positions.dtype} {format_shape(positions.shape)}; they come from sort_ids.")
    return _embedding_grad_infer([sorted_ids, dy], input_dim)


def _embedding_grad_sorted(sorted_ids, positions, dy, input_dim):
    """embedding_grad's sum, its terms taken in sorted order (for a row: in order of position)."""
    rows = dy.reshape(-1, dy.shape[-1])[positions.reshape(-1)]
    return dy.new_zeros(input_dim, dy.shape[-1]).index_add_(0, sorted_ids.reshape(-1).long(), rows)


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
        name="embedding_grad_sorted",
        doc="embedding_grad from sort_ids' outputs: row i of the (input_dim, output_dim) result sums dy's rows at "
        "the positions whose id is i, in order of position.",
        num_inputs=(3, 3),
        attrs={"input_dim": attr(int)},
        infer=_embedding_grad_sorted_infer,
        reference=_embedding_grad_sorted,
        traits={"gather"},
    ),
]
