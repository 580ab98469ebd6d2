"""embedding: row lookup in a table."""

import torch.nn.functional as F

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef
from kcomp.ir.ops.common import can_read_back, require_rank
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
]
