"""decompose, embeddings: embedding_grad into a stable sort of the ids and a two-level sum in a
fixed order; a reshape of an embedding's rows moved onto its ids.

    sorted, positions = sort_ids(ids)                         a torch op in the plan (torch.sort, stable)
    sums = embedding_grad_chunks(sorted, positions, dy)       the embedding_grad_chunks template
    d table = embedding_grad_sorted(sorted, sums)             the embedding_grad template

Why not float atomics (index_add_ on a GPU, tl.atomic_add): which of two threads adding into
one row gets there first varies from run to run, so repeated ids would sum in a different order
and a training run would not repeat bit for bit. Sorted, the positions of each id are one
contiguous run, in order of position (the sort is stable). The run is cut at every CHUNK-th
sorted index (kcomp/ir/ops/gather.py): each piece is summed in order of position by the program
of its chunk, then each row adds its pieces in chunk order. The order is fixed by the ids and
CHUNK alone, whatever the block sizes or the device; no program walks more than CHUNK terms
plus positions / CHUNK pieces (a single program walked a frequent id's whole run before: the
padding id 0, thousands of positions). See kernels/gather.py for the kernels and their costs.
"""

from kcomp.ir.graph import Node
from kcomp.passes.rewrite import Rewriter


def embedding_grad_to_sorted(node: Node, rw: Rewriter):
    ids, dy = node.inputs
    sorted_ids, positions = rw.emit("sort_ids", [ids])
    sums = rw.emit1("embedding_grad_chunks", [sorted_ids, positions, dy])
    return [rw.emit1("embedding_grad_sorted", [sorted_ids, sums], input_dim=node.attrs["input_dim"], dtype=dy.dtype)]


def reshape_ids_not_rows(node: Node, rw: Rewriter):
    """reshape(embedding(ids, table)) keeping the row axis -> embedding(reshape(ids), table).

    TimeDistributed folds the steps into the batch, (N, T, D) -> (N*T, D), before its Dense: with
    the fold on the ids (a view) the Dense's matmul reads the embedding directly, and so can
    load its rows through the ids (fuse_gather.py). Only where the reshape is the embedding's one
    reader (else both would be computed)."""
    x = node.inputs[0]
    lookup = rw.producer_of(x)
    shape = node.attrs["shape"]
    if lookup is None or lookup.op != "embedding" or rw.uses[x.id] != 1 or len(shape) < 2 or shape[-1] != x.shape[-1]:
        return None
    ids, table = lookup.inputs
    return [rw.emit1("embedding", [rw.emit1("reshape", [ids], shape=tuple(shape[:-1])), table])]


RULES = [("embedding_grad", embedding_grad_to_sorted), ("reshape", reshape_ids_not_rows)]
