"""SimpleRNN recurrence templates: every time step of a layer in one launch, forward and backward.

The input projection of every step (x @ kernel + bias) is one matmul before the launch
(kcomp/passes/decompose_recurrent.py); each program owns BLOCK_B rows of the batch and walks all
the time steps with h in registers:

    forward   a_t = xw_t + h @ U;  h = activation(a_t)
    backward  dz_t = dh * activation'(a_t);  dh = dz_t @ U^T for the step before

the activation and its derivative are the generated hooks ACT and ACT_GRAD
(kcomp/codegen/activation_hooks.py). Where the derivative is a function of the output (tanh,
relu, ...) the backward reads it from h_t; where it needs its input (elu, gelu, ...:
kcomp/ir/ops/scan_activations.saves_pre) the forward also writes every a_t (SAVE) and the
backward reads them (SAVE_PRE), as the LSTM's and GRU's scans save their gates' (recurrent.py).

U (units, units) is one tile, so it stays on chip up to 64 units (BLOCK_H 64 on 8 warps: 16
floats a thread), where the LSTM's and GRU's four and three tiles stay only up to 32
(recurrent_common.py reads them every step above). Units above SIMPLE_RNN_SCAN_MAX_UNITS run
the tiled templates (recurrent_tiled_simple_rnn.py: h in global memory, U read in chunks every
step). The recurrent matmul is tl.dot in `precision`. With a mask (MASKED) a masked step keeps h,
and backwards gives its pre-activation zero gradient and passes dh to the step before
(kcomp/ir/ops/recurrent_scan.py). With a recurrent dropout mask (RECURRENT_MASKS, (batch, 1,
units)) h_{t-1} is times it before its product, and backwards dz_t @ U^T is times it.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan_simple_rnn import SIMPLE_RNN_SCAN_MAX_UNITS
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent_common import (
    ActivationHooks, ScanCall, activation_flags, alone, batch_block, candidates, for_backward, kept_or, launch_grid,
    load_or_zeros, output_buffers, present, sizes, step_kept, tile_before_loop, times_gate, times_gate_mask,
)
from kcomp.kernels.template import Template

ON_CHIP_MAX = 64  # the largest BLOCK_H whose one recurrent tile is loaded once, before the loop


@triton.jit
def simple_rnn_scan_kernel(
    XW, U, MASK, RMASKS, HSEQ, PRE, n_batch, n_steps, units,
    SAVE: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr, ON_CHIP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, ACT: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]  # (row, step 0, col): xw's and h's
    u = tile_before_loop(U, units, 0, 1, ON_CHIP, False, BLOCK_H)
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for t in range(0, n_steps):
        z = tl.load(XW + seq_rows + t * units, mask=ok, other=0.0).to(tl.float32)
        h_read = times_gate_mask(h, RMASKS, rows, cols, ok, units, 0, 1, RECURRENT_MASKS)  # times its dropout mask
        z += times_gate(h_read, U, units, 0, u, 1, ON_CHIP, False, PRECISION, BLOCK_H)
        if SAVE:  # the pre-activation, for a backward whose activation derivative needs it (a masked step's too)
            tl.store(PRE + seq_rows + t * units, z.to(PRE.dtype.element_ty), mask=ok)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        # columns past units stay zero: they feed the next dot; a masked step keeps h
        h = kept_or(keep, tl.where(ok, ACT(z), 0.0), h, MASKED)
        tl.store(HSEQ + seq_rows + t * units, h.to(HSEQ.dtype.element_ty), mask=ok)


@triton.jit
def simple_rnn_scan_grad_kernel(
    U, HSEQ, PRE, MASK, RMASKS, DSEQ, DH, DZ, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr,
    ON_CHIP: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, ACT: tl.constexpr,
    ACT_GRAD: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    ut = tile_before_loop(U, units, 0, 1, ON_CHIP, True, BLOCK_H)
    dh_next = load_or_zeros(DH, rows[:, None].to(tl.int64) * units + cols[None, :], ok, HAS_DH, BLOCK_B, BLOCK_H)
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        dh = dh_next + load_or_zeros(DSEQ, seq_rows + t * units, ok, HAS_DSEQ, BLOCK_B, BLOCK_H)
        h = tl.load(HSEQ + seq_rows + t * units, mask=ok, other=0.0).to(tl.float32)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)  # a masked step: zero gradient, dh passed on
        # the derivative at the saved pre-activation (SAVE_PRE), else from h alone (x, unread, is h);
        # at a read step h is the activation of the pre-activation
        a = for_backward(load_or_zeros(PRE, seq_rows + t * units, ok, SAVE_PRE, BLOCK_B, BLOCK_H), h, SAVE_PRE)
        dz = kept_or(keep, tl.where(ok, ACT_GRAD(a, h, dh), 0.0), 0.0, MASKED)
        tl.store(DZ + seq_rows + t * units, dz.to(DZ.dtype.element_ty), mask=ok)
        dh_next = kept_or(keep, tl.zeros_like(dh), dh, MASKED)
        dh_next += times_gate_mask(times_gate(dz, U, units, 0, ut, 1, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS, rows,
                                   cols, ok, units, 0, 1, RECURRENT_MASKS)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SimpleRnnScanBinding(ActivationHooks):
    xw: int  # which input holds the projected inputs (batch, time, units)
    recurrent: int  # which holds U (units, units)
    mask: int | None = None  # which holds the mask (batch, time), None: every step read
    recurrent_masks: int | None = None  # which holds the recurrent dropout mask (batch, 1, units), None: none
    save: bool = False  # also write every step's pre-activation (the op's save: an activation that saves_pre)
    # Per output of simple_rnn_scan (every h_t, then the pre-activations): its position among the
    # kernel's outputs, or None where nothing reads it (the kernel writes scratch).
    outputs: tuple[int | None, ...] = (0,)


@dataclass(frozen=True, kw_only=True)
class SimpleRnnScanGradBinding(ActivationHooks):
    recurrent: int  # which input holds U,
    h_seq: int  # every h_t,
    pre_seq: int | None = None  # every step's pre-activation (None: the activation's derivative reads h alone),
    mask: int | None = None  # the mask (None: every step read),
    recurrent_masks: int | None = None  # the recurrent dropout mask (None: none),
    d_seq: int | None  # the gradients of every h_t (None: none arrive),
    d_h: int | None  # of the last h


def scan_call(binding: SimpleRnnScanBinding, inputs, out, precision: str, max_units: int = SIMPLE_RNN_SCAN_MAX_UNITS):
    """The forward launch checked and allocated, its tensors (XW, U, MASK, RMASKS, HSEQ, PRE): this
    template's and, up to its own max_units, the tiled one's (recurrent_tiled_simple_rnn.py)."""
    # check: the projected inputs and U contiguous
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    masks = present(inputs, (binding.mask, binding.recurrent_masks), xw)  # an absent one: never read
    n, steps, units = sizes("simple_rnn_scan", xw, u.shape[0], max_units)
    # allocate: every h_t, and (save) every pre-activation (where nothing reads them: scratch)
    out, buffers = output_buffers(binding.outputs, (xw.shape,) * (2 if binding.save else 1), out, xw)
    tensors = (xw, u, *masks, buffers[0], buffers[-1])  # PRE unused (never written) without save
    return ScanCall(binding, inputs, out, tensors, n, steps, units, precision)


def launch_scan(binding: SimpleRnnScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    call = scan_call(binding, inputs, out, precision)
    run_scan(call, config, interpret)
    return call.out


@tuned(candidates)
def run_scan(call: ScanCall, config: dict):
    launch_grid(simple_rnn_scan_kernel, call, config, ON_CHIP_MAX, **forward_flags(call.binding))


def forward_flags(binding: SimpleRnnScanBinding) -> dict:
    """The forward kernels' constexprs: whether they write the pre-activations, whether a recurrent
    dropout mask arrives, and the activation's hook."""
    return dict(SAVE=binding.save, RECURRENT_MASKS=binding.recurrent_masks is not None,
                **activation_flags(binding, recurrent=False))


def scan_grad_call(binding: SimpleRnnScanGradBinding, inputs, out, precision: str,
                   max_units: int = SIMPLE_RNN_SCAN_MAX_UNITS):
    """The backward launch checked and allocated, its tensors (U, HSEQ, PRE, MASK, RMASKS, DSEQ, DH, DZ),
    as scan_call."""
    # check: U, every h_t, the pre-activations, the masks and the gradients present, contiguous (an
    # absent one: never read)
    u, h_seq = inputs[binding.recurrent].contiguous(), inputs[binding.h_seq].contiguous()
    optional = present(inputs, (binding.pre_seq, binding.mask, binding.recurrent_masks, binding.d_seq, binding.d_h),
                       h_seq)
    n, steps, units = sizes("simple_rnn_scan_grad", h_seq, u.shape[0], max_units)
    # allocate: the gradient of every step's xw
    if out is None:
        out = torch.empty_like(h_seq)
    return ScanCall(binding, inputs, out, (u, h_seq, *optional, out), n, steps, units, precision)


def launch_scan_grad(binding: SimpleRnnScanGradBinding, inputs, out=None, config=None, precision="tf32",
                     interpret=None):
    call = scan_grad_call(binding, inputs, out, precision)
    run_scan_grad(call, config, interpret)
    return call.out


def grad_flags(binding: SimpleRnnScanGradBinding) -> dict:
    """The backward kernels' constexprs: which gradients arrive, whether a recurrent dropout mask
    does, the activation's hooks and whether its derivative reads the saved pre-activations."""
    return dict(HAS_DSEQ=binding.d_seq is not None, HAS_DH=binding.d_h is not None,
                RECURRENT_MASKS=binding.recurrent_masks is not None, SAVE_PRE=binding.pre_seq is not None,
                **activation_flags(binding, grad=True, recurrent=False))


@tuned(candidates)
def run_scan_grad(call: ScanCall, config: dict):
    launch_grid(simple_rnn_scan_grad_kernel, call, config, ON_CHIP_MAX, **grad_flags(call.binding))


TEMPLATES = (
    Template("simple_rnn_scan", launch_scan, SimpleRnnScanBinding, group=alone("simple_rnn_scan"), priority=86, tensor_cores=True),
    Template("simple_rnn_scan_grad", launch_scan_grad, SimpleRnnScanGradBinding, group=alone("simple_rnn_scan_grad"),
             priority=87, tensor_cores=True),
)
