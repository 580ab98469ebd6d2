"""Softmax cross-entropy template: Keras's categorical cross-entropy of softmax
probabilities and its gradient with respect to the softmax's input, in one pass.

Each program takes ROWS rows of the probabilities (a row held whole: BLOCK is
the next power of two of its length) with their labels, and writes what the
training step asks for: the per-row loss
    -sum(y * log(clip(p / sum(p), eps, 1 - eps)))        (HAS_LOSS)
the gradient of the loss with respect to the logits
    (p * sum(y) - y) * g                                  (HAS_GRAD)
and the accuracy metric's per-row hit, argmax(p) == argmax(y)  (HAS_CORRECT)
where g is the gradient arriving at each row's loss. Labels are one-hot/soft
rows, or class ids (SPARSE) turned into one-hot rows in registers, so neither
a one-hot tensor nor the 1/p of the chain rule through the softmax ever
reaches memory. (kcomp/ir/ops/loss_ops.py has the formulas' reasons.) Block
sizes and the grid are the row templates' (kcomp.kernels.rows).
"""

import triton
import triton.language as tl

EPSILON = tl.constexpr(1e-7)  # Keras's backend epsilon (constexpr: a jit function reads it)


@triton.jit
def softmax_xent_kernel(
    P, LABELS, G, LOSS, DLOGITS, CORRECT, n_rows, n_cols,
    SPARSE: tl.constexpr, HAS_LOSS: tl.constexpr, HAS_GRAD: tl.constexpr, HAS_CORRECT: tl.constexpr,
    ROWS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    row_mask = rows < n_rows
    mask = row_mask[:, None] & (cols[None, :] < n_cols)
    offs = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    p = tl.load(P + offs, mask=mask, other=0.0).to(tl.float32)
    if SPARSE:
        label = tl.load(LABELS + rows, mask=row_mask, other=-1)
        y = tl.where(cols[None, :] == label[:, None], 1.0, 0.0)
    else:
        y = tl.load(LABELS + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_LOSS:
        total = tl.where(row_mask, tl.sum(p, axis=1), 1.0)  # rows past the end are all zeros
        q = p / total[:, None]
        q = tl.minimum(tl.maximum(q, EPSILON), 1.0 - EPSILON)
        log_q = tl.where(mask, tl.log(q), 0.0)
        loss = -tl.sum(y * log_q, axis=1)
        tl.store(LOSS + rows, loss.to(LOSS.dtype.element_ty), mask=row_mask)
    if HAS_CORRECT:  # accuracy: the first largest probability is the (first largest) label's class
        guess = tl.argmax(tl.where(mask, p, -float("inf")), axis=1, tie_break_left=True)
        if SPARSE:
            truth = label
        else:
            truth = tl.argmax(tl.where(mask, y, -float("inf")), axis=1, tie_break_left=True)
        tl.store(CORRECT + rows, tl.where(guess == truth, 1.0, 0.0).to(CORRECT.dtype.element_ty), mask=row_mask)
    if HAS_GRAD:
        g = tl.load(G + rows, mask=row_mask, other=0.0).to(tl.float32)
        d = (p * tl.sum(y, axis=1)[:, None] - y) * g[:, None]
        tl.store(DLOGITS + offs, d.to(DLOGITS.dtype.element_ty), mask=mask)

