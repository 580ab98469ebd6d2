"""fuse, gathers: a Dense-like matmul loads its A rows through an embedding's ids, or A shifted.

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
would mean gathering along that matmul's contraction axis (with several unknown lengths, a
batched matmul kernel over the time steps), or table^T @ (dz summed by id), which costs input_dim
x output_dim x units multiply-adds more than it saves for a large vocabulary; x is positions x output_dim
floats (2 MB for the seed's sentiment model at batch 32), written once and read once.

    h_prev = shift(h_seq^T, axis=1, by=1, period=time);  d recurrent = h_prev @ dz
    becomes one matmul kernel reading the column k - 1 of h_seq^T for column k, and 0 at each
    sequence's first step: the h sequence one step late (an LSTM's, GRU's or SimpleRNN's backward,
    kcomp/passes/decompose_recurrent.py) is never written. simplify moves the shift after the
    reshape and transpose that make A of x^T g (shift_after_views). The same rule as the
    embedding's: the matmul is the shift's one reader, A is rank 2 (any shift axis, M or K), and
    no prologue reads it (a prologue would compute on the zeros moved in).
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


def shifted_operand(fusion, matmul: Node) -> Node | None:
    """The shift that A is, when the matmul may read A shifted instead; None otherwise."""
    a = matmul.inputs[0]
    producer = fusion.producers.get(a.id)
    if producer is None or producer.op != "shift" or not fusion.is_free(producer) or a.rank != 2:
        return None
    if a.dtype not in FLOAT_DTYPES or a.id in fusion.weight_only:
        return None
    return producer if fusion.sole_user(a) is matmul else None
