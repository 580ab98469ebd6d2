"""fuse, embeddings: a Dense-like matmul loads its A rows through an embedding's ids.

    x = embedding(ids, table);  y = x @ kernel       (the LSTM's input projection after the
                                                      decompose pass, Embedding -> Dense)
    becomes one matmul kernel whose A tile is table[ids[rows]]: the embedded sequence
    (positions x output_dim) is never written nor read back.

The matmul template asks this rule (through the fusion pass's state, Fusion.gathered_embedding:
the templates sit below the passes) when it claims its prologue (kernels/matmul.py); the
embedding then sits in the kernel node's body with the role "gather", so `kcomp build
--explain` shows "embedding (embedding) + lstm (matmul + bias_add)" as one kernel.

Only where the matmul is the embedded sequence's one reader (through elementwise prologue ops
at most). Elsewhere the sequence is kept, written once by the embedding template: in a
training step the projection's d kernel = x^T dz reads x too. Recomputing x there instead
would mean gathering along that matmul's contraction axis (it runs as a batched matmul over the
time steps, on torch), or table^T @ (dz summed by id), which costs input_dim x output_dim x
units multiply-adds more than it saves for a large vocabulary; x is positions x output_dim
floats (2 MB for the seed's sentiment model at batch 32), written once and read once.
"""

from kcomp.ir.graph import Node
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.operands import chain_input


def gathered_embedding(fusion, matmul: Node, prologue: list[Node]) -> Node | None:
    """The embedding whose output A (or the prologue chain's start) is, when the matmul may read
    A's rows through its ids instead; None otherwise."""
    a = chain_input(prologue) if prologue else matmul.inputs[0]
    producer = fusion.producers.get(a.id)
    if producer is None or producer.op != "embedding" or not fusion.is_free(producer):
        return None
    table = producer.inputs[1]
    if table.dtype not in FLOAT_DTYPES or table.dtype != a.dtype or a.id in fusion.weight_only:
        return None
    reader = prologue[0] if prologue else matmul
    return producer if fusion.sole_user(a) is reader else None
