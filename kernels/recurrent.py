"""LSTM recurrence templates: every time step of a layer in one launch, forward and backward.

The input projection of every step (x @ kernel + bias) is one matmul before the launch
(kcomp/passes/decompose_recurrent.py); what is left is the loop over time, which no other
template can run without a launch per step. Each program owns BLOCK_B rows of the batch
and walks all the time steps with its h and c in registers:

    forward   z = xw_t + h @ U;  i, f, g, o = gates(z);  c = f c + i g;  h = o act(c)
    backward  from the gradients of h and c, back through the steps: dz_t, and
              dh = dz_t @ U^T for the step before

The activations are constexpr hooks, as the matmul's epilogue: ACT (the layer's activation: g and
act(c)) and RACT (its recurrent_activation: i, f, o), their derivatives ACT_GRAD and RACT_GRAD
(x, y, g) -> g * act'(x), generated from the IR (kcomp/codegen/activation_hooks.py; Keras's
tanh and sigmoid by default, recurrent_activations.py). The forward saves the activated gates, or
with SAVE_PRE (an activation whose derivative needs its input) their pre-activations, from which
the backward computes them again (recurrent_common.for_backward, from_saved).

U (units, 4 * units) is read as four (units, units) tiles, one per gate. Where they fit in
registers (BLOCK_H <= ON_CHIP_MAX: 4 x 32 x 32 floats), they are loaded once before the loop
and stay on chip; larger ones are read every step (from L1/L2: the same few KB every step).
The tiles, the block sizes and the output buffers are the GRU's and SimpleRNN's too
(recurrent_common.py).
Units above SCAN_MAX_UNITS (kcomp/ir/ops/recurrent_scan.py) run the tiled templates
(recurrent_tiled.py: h and c in global memory, U read in chunks every step). The recurrent
matmuls are tl.dot in `precision` (tf32 or ieee). With a mask (MASKED) a masked step keeps h
and c, and backwards passes their gradients on with zero gradient for its gates
(kcomp/ir/ops/recurrent_scan.py). With recurrent dropout masks (RECURRENT_MASKS: (batch, 4,
units), recurrent_dropout in training) gate g's product reads h * masks[:, g], and backwards
dz_g @ U_g^T is times masks[:, g] before it joins dh; the masks are read every step (from L1),
not held in registers.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan import SCAN_MAX_UNITS
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent_common import (
    ActivationHooks, ScanCall, activation_flags, alone, batch_block, candidates, for_backward, from_saved, launch_grid,
    load_or_zeros, load_step_before, output_buffers, present, kept_or, sizes, step_kept, tile_before_loop, times_gate,
    times_gate_mask,
)
from kcomp.kernels.scan_launch import grad_flags, grad_operands, lstm_scan_tensors
from kcomp.kernels.template import Template


@triton.jit
def lstm_scan_kernel(
    XW, U, MASK, RMASKS, HSEQ, CSEQ, GATES, CLAST, n_batch, n_steps, units,
    SAVE: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr, ON_CHIP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units + cols[None, :]  # (row, step 0, gate 0, col)
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    u_i = tile_before_loop(U, units, 0, 4, ON_CHIP, False, BLOCK_H)
    u_f = tile_before_loop(U, units, 1, 4, ON_CHIP, False, BLOCK_H)
    u_g = tile_before_loop(U, units, 2, 4, ON_CHIP, False, BLOCK_H)
    u_o = tile_before_loop(U, units, 3, 4, ON_CHIP, False, BLOCK_H)
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    c = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for t in range(0, n_steps):
        z = XW + gate_rows + t * 4 * units
        # each gate's h_{t-1}, times its recurrent dropout mask (RECURRENT_MASKS; read every step, from L1)
        h_i = times_gate_mask(h, RMASKS, rows, cols, ok, units, 0, 4, RECURRENT_MASKS)
        h_f = times_gate_mask(h, RMASKS, rows, cols, ok, units, 1, 4, RECURRENT_MASKS)
        h_g = times_gate_mask(h, RMASKS, rows, cols, ok, units, 2, 4, RECURRENT_MASKS)
        h_o = times_gate_mask(h, RMASKS, rows, cols, ok, units, 3, 4, RECURRENT_MASKS)
        z_i = tl.load(z, mask=ok, other=0.0).to(tl.float32) + times_gate(h_i, U, units, 0, u_i, 4, ON_CHIP, False, PRECISION, BLOCK_H)
        z_f = tl.load(z + units, mask=ok, other=0.0).to(tl.float32) + times_gate(h_f, U, units, 1, u_f, 4, ON_CHIP, False, PRECISION, BLOCK_H)
        z_g = tl.load(z + 2 * units, mask=ok, other=0.0).to(tl.float32) + times_gate(h_g, U, units, 2, u_g, 4, ON_CHIP, False, PRECISION, BLOCK_H)
        z_o = tl.load(z + 3 * units, mask=ok, other=0.0).to(tl.float32) + times_gate(h_o, U, units, 3, u_o, 4, ON_CHIP, False, PRECISION, BLOCK_H)
        i, f, g, o = RACT(z_i), RACT(z_f), ACT(z_g), RACT(z_o)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        c_new = tl.where(ok, f * c + i * g, 0.0)  # columns past units stay zero: they feed the next dot
        h = kept_or(keep, tl.where(ok, o * ACT(c_new), 0.0), h, MASKED)  # a masked step keeps h and c
        c = kept_or(keep, c_new, c, MASKED)
        tl.store(HSEQ + seq_rows + t * units, h.to(HSEQ.dtype.element_ty), mask=ok)
        if SAVE:
            tl.store(CSEQ + seq_rows + t * units, c.to(CSEQ.dtype.element_ty), mask=ok)
            saved = GATES + gate_rows + t * 4 * units
            tl.store(saved, for_backward(z_i, i, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + units, for_backward(z_f, f, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + 2 * units, for_backward(z_g, g, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + 3 * units, for_backward(z_o, o, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
    if not SAVE:
        tl.store(CLAST + rows[:, None].to(tl.int64) * units + cols[None, :], c.to(CLAST.dtype.element_ty), mask=ok)


@triton.jit
def lstm_scan_grad_kernel(
    U, CSEQ, GATES, MASK, RMASKS, DSEQ, DH, DC, DZ, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, HAS_DC: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr, ON_CHIP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    ACT: tl.constexpr, RACT: tl.constexpr, ACT_GRAD: tl.constexpr, RACT_GRAD: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units + cols[None, :]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    last = rows[:, None].to(tl.int64) * units + cols[None, :]
    ut_i = tile_before_loop(U, units, 0, 4, ON_CHIP, True, BLOCK_H)
    ut_f = tile_before_loop(U, units, 1, 4, ON_CHIP, True, BLOCK_H)
    ut_g = tile_before_loop(U, units, 2, 4, ON_CHIP, True, BLOCK_H)
    ut_o = tile_before_loop(U, units, 3, 4, ON_CHIP, True, BLOCK_H)
    dh_next = load_or_zeros(DH, last, ok, HAS_DH, BLOCK_B, BLOCK_H)
    dc_next = load_or_zeros(DC, last, ok, HAS_DC, BLOCK_B, BLOCK_H)
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        dh = dh_next + load_or_zeros(DSEQ, seq_rows + t * units, ok, HAS_DSEQ, BLOCK_B, BLOCK_H)
        saved = GATES + gate_rows + t * 4 * units
        # each gate as saved (its output, or with SAVE_PRE its pre-activation) and its output
        s_i = tl.load(saved, mask=ok, other=0.0).to(tl.float32)
        s_f = tl.load(saved + units, mask=ok, other=0.0).to(tl.float32)
        s_g = tl.load(saved + 2 * units, mask=ok, other=0.0).to(tl.float32)
        s_o = tl.load(saved + 3 * units, mask=ok, other=0.0).to(tl.float32)
        i, f, g, o = from_saved(s_i, RACT, SAVE_PRE), from_saved(s_f, RACT, SAVE_PRE), from_saved(s_g, ACT, SAVE_PRE), \
            from_saved(s_o, RACT, SAVE_PRE)
        c = tl.load(CSEQ + seq_rows + t * units, mask=ok, other=0.0).to(tl.float32)
        c_prev = load_step_before(CSEQ, seq_rows, t, units, ok, BLOCK_B, BLOCK_H)
        act_c = ACT(c)
        dc = dc_next + ACT_GRAD(c, act_c, dh * o)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)  # a masked step's gates: zero gradient
        dz_i = kept_or(keep, tl.where(ok, RACT_GRAD(s_i, i, dc * g), 0.0), 0.0, MASKED)
        dz_f = kept_or(keep, tl.where(ok, RACT_GRAD(s_f, f, dc * c_prev), 0.0), 0.0, MASKED)
        dz_g = kept_or(keep, tl.where(ok, ACT_GRAD(s_g, g, dc * i), 0.0), 0.0, MASKED)
        dz_o = kept_or(keep, tl.where(ok, RACT_GRAD(s_o, o, dh * act_c), 0.0), 0.0, MASKED)
        out = DZ + gate_rows + t * 4 * units
        tl.store(out, dz_i.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + units, dz_f.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + 2 * units, dz_g.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + 3 * units, dz_o.to(DZ.dtype.element_ty), mask=ok)
        dc_next = kept_or(keep, dc * f, dc_next, MASKED)  # a masked step passes dc and dh to the step before
        dh_next = kept_or(keep, tl.zeros_like(dh), dh, MASKED)
        # through each gate's product, times its recurrent dropout mask (RECURRENT_MASKS)
        dh_next += times_gate_mask(times_gate(dz_i, U, units, 0, ut_i, 4, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 0, 4, RECURRENT_MASKS)
        dh_next += times_gate_mask(times_gate(dz_f, U, units, 1, ut_f, 4, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 1, 4, RECURRENT_MASKS)
        dh_next += times_gate_mask(times_gate(dz_g, U, units, 2, ut_g, 4, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 2, 4, RECURRENT_MASKS)
        dh_next += times_gate_mask(times_gate(dz_o, U, units, 3, ut_o, 4, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 3, 4, RECURRENT_MASKS)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LstmScanBinding(ActivationHooks):
    xw: int  # which input holds the projected inputs (batch, time, 4 * units)
    recurrent: int  # which holds U (units, 4 * units)
    mask: int | None = None  # which holds the mask (batch, time), None: every step read
    recurrent_masks: int | None = None  # which holds the recurrent dropout masks (batch, 4, units), None: none
    save: bool  # every c_t and the gates too (for the backward), else the last c
    # Per output of lstm_scan (every h_t, then the last c or every c_t and the gates): its position
    # among the kernel's outputs, or None where nothing reads it (the kernel writes scratch).
    outputs: tuple[int | None, ...]


@dataclass(frozen=True, kw_only=True)
class LstmScanGradBinding(ActivationHooks):
    recurrent: int  # which input holds U,
    c_seq: int  # every c_t,
    gates: int  # the saved gates,
    mask: int | None = None  # the mask (None: every step read),
    recurrent_masks: int | None = None  # the recurrent dropout masks (None: none),
    d_seq: int | None  # the gradients of every h_t (None: none arrive),
    d_h: int | None  # of the last h,
    d_c: int | None  # and of the last c


def launch_scan(binding: LstmScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the projected inputs and U contiguous, float32 arithmetic whatever they hold
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    masks = present(inputs, (binding.mask, binding.recurrent_masks), xw)  # absent: never read
    n, steps, units = sizes("lstm_scan", xw, u.shape[0], SCAN_MAX_UNITS)
    # allocate: every h_t, then the last c, or every c_t and the gates (those nothing reads: scratch)
    shapes = ((n, steps, units), (n, steps, units), xw.shape) if binding.save else ((n, steps, units), (n, units))
    out, buffers = output_buffers(binding.outputs, shapes, out, xw)
    tensors = lstm_scan_tensors(binding.save, xw, u, masks, buffers)
    run_scan(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(candidates)
def run_scan(call: ScanCall, config: dict):
    launch_grid(lstm_scan_kernel, call, config, SAVE=call.binding.save,
                RECURRENT_MASKS=call.binding.recurrent_masks is not None, **activation_flags(call.binding))


def launch_scan_grad(binding: LstmScanGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: U, every c_t, the gates and the gradients present, contiguous (an absent one: never read)
    operands = grad_operands(binding, inputs)
    n, steps, units = sizes("lstm_scan", operands[2], operands[0].shape[0], SCAN_MAX_UNITS)
    # allocate: the gradient of every step's gates
    if out is None:
        out = torch.empty_like(operands[2])
    tensors = (*operands, out)
    run_scan_grad(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(candidates)
def run_scan_grad(call: ScanCall, config: dict):
    launch_grid(lstm_scan_grad_kernel, call, config, **grad_flags(call.binding),
                **activation_flags(call.binding, grad=True))


TEMPLATES = (
    Template("lstm_scan", launch_scan, LstmScanBinding, group=alone("lstm_scan"), priority=72, tensor_cores=True),
    Template("lstm_scan_grad", launch_scan_grad, LstmScanGradBinding, group=alone("lstm_scan_grad"), priority=73,
             tensor_cores=True),
)
