"""GRU recurrence templates: every time step of a layer in one launch, forward and backward.

The input projection of every step (x @ kernel + the input bias) is one matmul before the launch
(kcomp/passes/decompose_recurrent.py); each program owns BLOCK_B rows of the batch and walks all
the time steps with h in registers (kcomp/ir/ops/recurrent_scan_gru.py has the math):

    forward   z, r = ract(xw_zr + h @ U_zr + b_zr);  c = act(xw_h + r * (h @ U_h + b_h))
              (reset_after) or act(xw_h + (r * h) @ U_h);  h = z h + (1 - z) c

(act, ract: the hooks ACT, RACT and their derivatives, and SAVE_PRE, as the LSTM's: recurrent.py)
    backward  from the gradients of the h_t, back through the steps: dxw_t (and, reset_after,
              the recurrent product's), and dh = dh z + (the gates' gradients) @ U^T

U (units, 3 * units) is read as three (units, units) tiles, one per gate, as the LSTM's four
(recurrent_common.py: on chip for BLOCK_H <= ON_CHIP_MAX, else read every step). Units above
GRU_SCAN_MAX_UNITS run the tiled templates (recurrent_tiled_gru.py). The recurrent matmuls are
tl.dot in `precision`. With a mask (MASKED) a masked step keeps h, and backwards passes dh on
with zero gradient for its xw (kcomp/ir/ops/recurrent_scan_gru.py). With recurrent dropout masks
(RECURRENT_MASKS, (batch, 3, units)) each gate's h_{t-1} is times its mask before its product
(without reset_after, c's product reads r * h * m_h), and backwards each gate's product gradient
is times its mask (recurrent_common.times_gate_mask: the masks read every step, from L1).
"""

from dataclasses import dataclass

import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan_gru import GRU_SCAN_MAX_UNITS, saved_blocks
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent_common import (
    ActivationHooks, ScanCall, activation_flags, alone, batch_block, candidates, for_backward, from_saved, kept_or,
    launch_grid, load_or_zeros, load_step_before, output_buffers, present, sizes, step_kept, tile_before_loop, times_gate,
    times_gate_mask,
)
from kcomp.kernels.template import Template


@triton.jit
def gru_scan_kernel(
    XW, U, RB, MASK, RMASKS, HSEQ, SAVED, n_batch, n_steps, units,
    HAS_BIAS: tl.constexpr, RESET_AFTER: tl.constexpr, SAVE: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr, ON_CHIP: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    S: tl.constexpr = 4 if RESET_AFTER else 3  # the saved blocks per step: z, r, c (and h @ U_h + b_h)
    xw_rows = rows[:, None].to(tl.int64) * n_steps * 3 * units + cols[None, :]  # (row, step 0, gate 0, col)
    saved_rows = rows[:, None].to(tl.int64) * n_steps * S * units + cols[None, :]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    u_z = tile_before_loop(U, units, 0, 3, ON_CHIP, False, BLOCK_H)
    u_r = tile_before_loop(U, units, 1, 3, ON_CHIP, False, BLOCK_H)
    u_h = tile_before_loop(U, units, 2, 3, ON_CHIP, False, BLOCK_H)
    in_units = cols[None, :] < units
    b_z = load_or_zeros(RB, cols[None, :], in_units, HAS_BIAS, 1, BLOCK_H)  # (1, BLOCK_H): every row's
    b_r = load_or_zeros(RB, units + cols[None, :], in_units, HAS_BIAS, 1, BLOCK_H)
    b_h = load_or_zeros(RB, 2 * units + cols[None, :], in_units, HAS_BIAS, 1, BLOCK_H)
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for t in range(0, n_steps):
        x = XW + xw_rows + t * 3 * units
        x_z = tl.load(x, mask=ok, other=0.0).to(tl.float32)
        x_r = tl.load(x + units, mask=ok, other=0.0).to(tl.float32)
        x_h = tl.load(x + 2 * units, mask=ok, other=0.0).to(tl.float32)
        # each gate's h_{t-1}, times its recurrent dropout mask (RECURRENT_MASKS)
        h_z = times_gate_mask(h, RMASKS, rows, cols, ok, units, 0, 3, RECURRENT_MASKS)
        h_r = times_gate_mask(h, RMASKS, rows, cols, ok, units, 1, 3, RECURRENT_MASKS)
        h_c = times_gate_mask(h, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)
        a_z = x_z + times_gate(h_z, U, units, 0, u_z, 3, ON_CHIP, False, PRECISION, BLOCK_H) + b_z  # pre-activations
        a_r = x_r + times_gate(h_r, U, units, 1, u_r, 3, ON_CHIP, False, PRECISION, BLOCK_H) + b_r
        z, r = RACT(a_z), RACT(a_r)
        if RESET_AFTER:
            h_h = times_gate(h_c, U, units, 2, u_h, 3, ON_CHIP, False, PRECISION, BLOCK_H) + b_h
            a_c = x_h + r * h_h
        else:
            a_c = x_h + times_gate(r * h_c, U, units, 2, u_h, 3, ON_CHIP, False, PRECISION, BLOCK_H)
        c = ACT(a_c)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)  # a masked step keeps h
        h = kept_or(keep, tl.where(ok, z * h + (1.0 - z) * c, 0.0), h, MASKED)  # columns past units stay zero
        tl.store(HSEQ + seq_rows + t * units, h.to(HSEQ.dtype.element_ty), mask=ok)
        if SAVE:
            saved = SAVED + saved_rows + t * S * units
            tl.store(saved, for_backward(a_z, z, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
            tl.store(saved + units, for_backward(a_r, r, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
            tl.store(saved + 2 * units, for_backward(a_c, c, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
            if RESET_AFTER:
                tl.store(saved + 3 * units, h_h.to(SAVED.dtype.element_ty), mask=ok)


@triton.jit
def _store_gates(OUT, offs, units, ok, g_z, g_r, g_h):
    tl.store(OUT + offs, g_z.to(OUT.dtype.element_ty), mask=ok)
    tl.store(OUT + offs + units, g_r.to(OUT.dtype.element_ty), mask=ok)
    tl.store(OUT + offs + 2 * units, g_h.to(OUT.dtype.element_ty), mask=ok)


@triton.jit
def gru_scan_grad_kernel(
    U, HSEQ, SAVED, MASK, RMASKS, DSEQ, DH, DXW, DHU, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, RESET_AFTER: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr, ON_CHIP: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, ACT_GRAD: tl.constexpr, RACT_GRAD: tl.constexpr,
    SAVE_PRE: tl.constexpr,
):
    rows, cols, ok = batch_block(n_batch, units, BLOCK_B, BLOCK_H)
    S: tl.constexpr = 4 if RESET_AFTER else 3
    xw_rows = rows[:, None].to(tl.int64) * n_steps * 3 * units + cols[None, :]
    saved_rows = rows[:, None].to(tl.int64) * n_steps * S * units + cols[None, :]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    ut_z = tile_before_loop(U, units, 0, 3, ON_CHIP, True, BLOCK_H)
    ut_r = tile_before_loop(U, units, 1, 3, ON_CHIP, True, BLOCK_H)
    ut_h = tile_before_loop(U, units, 2, 3, ON_CHIP, True, BLOCK_H)
    dh_next = load_or_zeros(DH, rows[:, None].to(tl.int64) * units + cols[None, :], ok, HAS_DH, BLOCK_B, BLOCK_H)
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        dh_in = dh_next + load_or_zeros(DSEQ, seq_rows + t * units, ok, HAS_DSEQ, BLOCK_B, BLOCK_H)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        dh = kept_or(keep, dh_in, 0.0, MASKED)  # a masked step: zero gradients for its xw
        saved = SAVED + saved_rows + t * S * units
        s_z = tl.load(saved, mask=ok, other=0.0).to(tl.float32)  # each gate as saved (for_backward)
        s_r = tl.load(saved + units, mask=ok, other=0.0).to(tl.float32)
        s_c = tl.load(saved + 2 * units, mask=ok, other=0.0).to(tl.float32)
        z, r, c = from_saved(s_z, RACT, SAVE_PRE), from_saved(s_r, RACT, SAVE_PRE), from_saved(s_c, ACT, SAVE_PRE)
        h_prev = load_step_before(HSEQ, seq_rows, t, units, ok, BLOCK_B, BLOCK_H)
        dz = tl.where(ok, RACT_GRAD(s_z, z, dh * (h_prev - c)), 0.0)
        da = tl.where(ok, ACT_GRAD(s_c, c, dh * (1.0 - z)), 0.0)  # of the candidate's pre-activation
        if RESET_AFTER:
            h_h = tl.load(saved + 3 * units, mask=ok, other=0.0).to(tl.float32)
            dr = tl.where(ok, RACT_GRAD(s_r, r, da * h_h), 0.0)
            d_hh = da * r  # of h @ U_h + b_h
            _store_gates(DHU, xw_rows + t * 3 * units, units, ok, dz, dr, d_hh)
            dh_hh = times_gate(d_hh, U, units, 2, ut_h, 3, ON_CHIP, True, PRECISION, BLOCK_H)  # of h_{t-1} * m_h
            dh_prev = dh * z + times_gate_mask(dh_hh, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)
        else:
            d_rh = times_gate(da, U, units, 2, ut_h, 3, ON_CHIP, True, PRECISION, BLOCK_H)  # of r * h_prev (* m_h)
            h_prev_c = times_gate_mask(h_prev, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)
            dr = tl.where(ok, RACT_GRAD(s_r, r, d_rh * h_prev_c), 0.0)
            dh_prev = dh * z + times_gate_mask(d_rh * r, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)
        _store_gates(DXW, xw_rows + t * 3 * units, units, ok, dz, dr, da)
        # through each gate's product, times its recurrent dropout mask (RECURRENT_MASKS)
        dh_prev += times_gate_mask(times_gate(dz, U, units, 0, ut_z, 3, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 0, 3, RECURRENT_MASKS)
        dh_prev += times_gate_mask(times_gate(dr, U, units, 1, ut_r, 3, ON_CHIP, True, PRECISION, BLOCK_H), RMASKS,
                                   rows, cols, ok, units, 1, 3, RECURRENT_MASKS)
        dh_prev += kept_or(keep, tl.zeros_like(dh_in), dh_in, MASKED)  # and dh passed to the step before
        dh_next = tl.where(ok, dh_prev, 0.0)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GruScanBinding(ActivationHooks):
    xw: int  # which input holds the projected inputs (batch, time, 3 * units)
    recurrent: int  # which holds U (units, 3 * units)
    recurrent_bias: int | None  # which holds the recurrent bias (3 * units,) (reset_after), None: none
    mask: int | None = None  # which holds the mask (batch, time), None: every step read
    recurrent_masks: int | None = None  # which holds the recurrent dropout masks (batch, 3, units), None: none
    reset_after: bool
    save: bool  # what the backward reads too (z, r, c, and h @ U_h + b_h), else every h_t alone
    # Per output of gru_scan (every h_t, then what it saves): its position among the kernel's
    # outputs, or None where nothing reads it (the kernel writes scratch).
    outputs: tuple[int | None, ...]


@dataclass(frozen=True, kw_only=True)
class GruScanGradBinding(ActivationHooks):
    recurrent: int  # which input holds U,
    h_seq: int  # every h_t,
    saved: int  # what gru_scan saved,
    mask: int | None = None  # the mask (batch, time) (None: every step read),
    recurrent_masks: int | None = None  # the recurrent dropout masks (None: none),
    d_seq: int | None  # the gradients of every h_t (None: none arrive),
    d_h: int | None  # of the last h
    reset_after: bool
    outputs: tuple[int | None, ...]  # per output of gru_scan_grad (dxw, and the recurrent product's), as above


def launch_scan(binding: GruScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the projected inputs, U, the recurrent bias and the masks contiguous (an absent one: never read)
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    bias, *masks = present(inputs, (binding.recurrent_bias, binding.mask, binding.recurrent_masks), u)
    n, steps, units = sizes("gru_scan", xw, u.shape[0], GRU_SCAN_MAX_UNITS)
    # allocate: every h_t, and what the backward reads (those nothing reads: scratch)
    seq = (n, steps, units)
    shapes = (seq, (n, steps, saved_blocks(binding.reset_after) * units)) if binding.save else (seq,)
    out, buffers = output_buffers(binding.outputs, shapes, out, xw)
    tensors = (xw, u, bias, *masks, buffers[0], buffers[-1])  # SAVED unused (never written) without save
    run_scan(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(candidates)
def run_scan(call: ScanCall, config: dict):
    b = call.binding
    launch_grid(gru_scan_kernel, call, config, HAS_BIAS=b.recurrent_bias is not None, RESET_AFTER=b.reset_after,
                SAVE=b.save, RECURRENT_MASKS=b.recurrent_masks is not None, **activation_flags(b))


def launch_scan_grad(binding: GruScanGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: U, every h_t, the saved gates, the masks and the gradients present, contiguous (an absent one: never read)
    u, h_seq, saved = (inputs[i].contiguous() for i in (binding.recurrent, binding.h_seq, binding.saved))
    optional = present(inputs, (binding.mask, binding.recurrent_masks, binding.d_seq, binding.d_h), h_seq)
    n, steps, units = sizes("gru_scan_grad", h_seq, u.shape[0], GRU_SCAN_MAX_UNITS)
    # allocate: the gradient of every step's xw, and (reset_after) of the recurrent product
    shapes = ((n, steps, 3 * units),) * (2 if binding.reset_after else 1)
    out, buffers = output_buffers(binding.outputs, shapes, out, h_seq)
    tensors = (u, h_seq, saved, *optional, buffers[0], buffers[-1])  # DHU unused without reset_after
    run_scan_grad(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(candidates)
def run_scan_grad(call: ScanCall, config: dict):
    b = call.binding
    launch_grid(gru_scan_grad_kernel, call, config, HAS_DSEQ=b.d_seq is not None, HAS_DH=b.d_h is not None,
                RESET_AFTER=b.reset_after, RECURRENT_MASKS=b.recurrent_masks is not None,
                **activation_flags(b, grad=True))


TEMPLATES = (
    Template("gru_scan", launch_scan, GruScanBinding, group=alone("gru_scan"), priority=84, tensor_cores=True),
    Template("gru_scan_grad", launch_scan_grad, GruScanGradBinding, group=alone("gru_scan_grad"), priority=85,
             tensor_cores=True),
)
