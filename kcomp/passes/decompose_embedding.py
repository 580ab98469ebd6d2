"""decompose, embeddings: embedding_grad into a stable sort of the ids and a sum in that order.

    sorted, positions = sort_ids(ids)                        a torch op in the plan (torch.sort, stable)
    d table = embedding_grad_sorted(sorted, positions, dy)   the embedding_grad template

Why not float atomics (index_add_ on a GPU, tl.atomic_add): which of two threads adding into
one row gets there first varies from run to run, so repeated ids would sum in a different order
and a training run would not repeat bit for bit. Sorted, the positions of each id are one
contiguous run, in order of position (the sort is stable); the kernel finds each table row's
run by binary search and adds its dy rows one after another, in that order, whatever the block
sizes or the device. See kernels/gather.py for the kernel and its costs.
"""

from kcomp.ir.graph import Node
from kcomp.passes.rewrite import Rewriter


def embedding_grad_to_sorted(node: Node, rw: Rewriter):
    ids, dy = node.inputs
    sorted_ids, positions = rw.emit("sort_ids", [ids])
    return [rw.emit1("embedding_grad_sorted", [sorted_ids, positions, dy], input_dim=node.attrs["input_dim"])]


RULES = [("embedding_grad", embedding_grad_to_sorted)]
