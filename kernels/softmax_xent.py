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
sizes and the grid are the row templates' (kcomp.kernels.rows). NaN and inf
pass through as in the torch reference (clip and argmax included).

No generated hook: a kernel module's binding says which inputs are the
probabilities, labels and incoming gradient, which outputs it computes (the
flags above) and their dtypes; its launch is this module's.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.grad_support import computed_from
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.rows import grid, row_candidates, row_fits, rows_of
from kcomp.kernels.template import Binding, Call, Group, Template

EPSILON = tl.constexpr(1e-7)  # Keras's backend epsilon (constexpr: a jit function reads it)


@triton.jit
def _first_argmax(x, cols, mask, BLOCK: tl.constexpr):
    """Each row's index of its first largest value, a NaN counting as larger than any number
    (torch.argmax). tl.argmax sees no NaN: its comparisons would pass one over, and the
    interpreter's (numpy's nanargmax) raises on a row of NaN."""
    is_nan = x != x
    first_nan = tl.min(tl.where(mask & is_nan, cols[None, :], BLOCK), axis=1)
    largest = tl.argmax(tl.where(mask & ~is_nan, x, -float("inf")), axis=1, tie_break_left=True)
    return tl.where(first_nan < BLOCK, first_nan, largest)


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
        label = tl.load(LABELS + rows, mask=row_mask, other=0)
        y = tl.where(cols[None, :] == label[:, None], 1.0, 0.0)
        # A class id outside [0, n_cols) would select no class and train at loss 0; its row's
        # loss and gradient are NaN instead (the reference raises), so the bad label shows.
        y = tl.where(((label < 0) | (label >= n_cols))[:, None], float("nan"), y)
    else:
        y = tl.load(LABELS + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_LOSS:
        total = tl.where(row_mask, tl.sum(p, axis=1), 1.0)  # rows past the end are all zeros
        q = p / total[:, None]
        # Keras's clip; a NaN stays NaN as in torch.clamp (Triton's default would clip it to eps,
        # and a model whose weights went to NaN would report a loss of -log(1e-7) = 16.118).
        q = tl.clamp(q, EPSILON, 1.0 - EPSILON, propagate_nan=tl.PropagateNan.ALL)
        log_q = tl.where(mask, tl.log(q), 0.0)
        loss = -tl.sum(y * log_q, axis=1)
        tl.store(LOSS + rows, loss.to(LOSS.dtype.element_ty), mask=row_mask)
    if HAS_CORRECT:  # accuracy: the first largest probability is the (first largest) label's class
        guess = _first_argmax(p, cols, mask, BLOCK)
        if SPARSE:
            truth = label
        else:
            truth = _first_argmax(y, cols, mask, BLOCK)
        tl.store(CORRECT + rows, tl.where(guess == truth, 1.0, 0.0).to(CORRECT.dtype.element_ty), mask=row_mask)
    if HAS_GRAD:
        g = tl.load(G + rows, mask=row_mask, other=0.0).to(tl.float32)
        d = (p * tl.sum(y, axis=1)[:, None] - y) * g[:, None]
        tl.store(DLOGITS + offs, d.to(DLOGITS.dtype.element_ty), mask=mask)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SoftmaxXentBinding(Binding):
    probs: int  # which input holds the softmax probabilities
    labels: int  # which input holds the labels
    grad: int | None  # which input holds the gradient arriving at each row's loss (with a "dlogits" output)
    sparse: bool  # labels are class ids, not rows
    outputs: tuple[str, ...]  # "loss", "dlogits", "correct": the outputs in the body's order
    out_dtypes: tuple[torch.dtype, ...]  # theirs


@dataclass
class SoftmaxXentCall(Call):
    p: torch.Tensor  # the probabilities, contiguous
    labels: torch.Tensor
    g: torch.Tensor | None
    outs: dict  # output name -> buffer
    n_rows: int
    n_cols: int


def launch(binding: SoftmaxXentBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: rows are the last axis of contiguous probabilities; labels are class ids or rows.
    p = inputs[binding.probs].contiguous()
    labels = inputs[binding.labels].contiguous()
    g = inputs[binding.grad].contiguous() if binding.grad is not None else None
    # allocate: the per-row loss and hit, and the gradient of the probabilities' shape
    if out is None:
        shapes = {"loss": p.shape[:-1], "dlogits": p.shape, "correct": p.shape[:-1]}
        buffers = tuple(torch.empty(shapes[name], device=p.device, dtype=dtype)
                        for name, dtype in zip(binding.outputs, binding.out_dtypes))
        out = buffers[0] if len(buffers) == 1 else buffers
    outs = dict(zip(binding.outputs, out if len(binding.outputs) > 1 else (out,)))
    run(SoftmaxXentCall(binding, inputs, out, p, labels, g, outs, *rows_of(p)), config, interpret)
    return out


@tuned(row_candidates)
def run(call: SoftmaxXentCall, config: dict):
    outs, p = call.outs, call.p  # an output the kernel does not compute gets p, which it never writes
    softmax_xent_kernel[grid(call.n_rows, config)](
        p, call.labels, call.g if "dlogits" in outs else p, outs.get("loss", p), outs.get("dlogits", p),
        outs.get("correct", p), call.n_rows, call.n_cols,
        SPARSE=call.binding.sparse, HAS_LOSS="loss" in outs, HAS_GRAD="dlogits" in outs, HAS_CORRECT="correct" in outs,
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _group(fusion, node):
    """A softmax cross-entropy with its gradient and the accuracy: one pass over probabilities
    and labels computes all three, the gradient when its per-row factor g does not depend on
    the loss (it does not for Keras's reductions: g is sample_weight / count)."""
    if node.op not in ("softmax_cross_entropy", "softmax_cross_entropy_grad") or not row_fits(node.inputs[0]):
        return None
    if node.op != "softmax_cross_entropy":
        return Group(node)
    probs, labels = node.inputs
    extra = []
    for user in fusion.users_of(probs):
        if user.op == "softmax_cross_entropy_grad" and user.inputs[1].id == labels.id and fusion.is_free(user):
            # Reading only the loss's shape (broadcast_like's template) is no dependence.
            if user.inputs[2].id not in computed_from(fusion.graph.nodes, {node.outputs[0].id}, through_shapes=False):
                extra += [user, *fusion.stored_cast(user)]  # a 16-bit step's gradient: stored in 16 bits
                break
    # The accuracy on the same rows (argmax of p against the labels' class) costs one more store.
    kind = "sparse_categorical" if labels.dtype not in FLOAT_DTYPES else "categorical"
    for user in fusion.users_of(probs):
        if (user.op == "correct" and user.attrs["kind"] == kind and fusion.is_free(user)
                and user.inputs[0].id == labels.id and user.inputs[1].id == probs.id):
            extra.append(user)
            break
    return Group(node, extra=extra)


TEMPLATES = (Template("softmax_xent", launch, SoftmaxXentBinding, group=_group, priority=70),)
