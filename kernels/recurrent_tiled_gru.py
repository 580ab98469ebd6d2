"""GRU recurrence templates for hidden sizes above the on-chip limit: h in global memory.

kernels/recurrent_gru.py holds a program's h in registers, up to GRU_SCAN_MAX_UNITS units. Above
that (up to GRU_SCAN_TILED_MAX_UNITS) these templates take the gru_scan and gru_scan_grad nodes
(the fusion pass asks them first; they refuse what the on-chip ones hold), the way the tiled LSTM
(recurrent_tiled.py) does: one launch per layer, each program owning BLOCK_B batch rows and
walking every step chunk by chunk of BLOCK_H units, h_{t-1} read back from the h sequence output
and U read from L2 in (BLOCK_K, BLOCK_H) tiles (recurrent_tiled.times_matrix), a barrier
(tl.debug_barrier) wherever a phase reads what another chunk of the same program wrote. The
math is kcomp/ir/ops/recurrent_scan_gru.py's:

    forward, reset_after, each chunk:   z, r = ract(xw_zr + h_{t-1} @ U_zr + b_zr);
        h_h = h_{t-1} @ U_h + b_h;  c = act(xw_h + r h_h);  h = z h_{t-1} + (1 - z) c
        (act, ract: the on-chip templates' hooks, and SAVE_PRE: recurrent.py)
    forward, reset_after=False: c's product (r * h_{t-1}) @ U_h needs every unit's r, so a step
        runs twice over the chunks: z and r * h_{t-1} into a (batch, 2 * units) scratch, a
        barrier, then c and h
    backward, reset_after, each chunk:  dh = dh_carry + dseq_t + dhu_{t+1} @ U^T, then
        dxw_t = (dz, dr, da) and dhu_t = (dz, dr, da r)
    backward, reset_after=False: dh = dh_carry + dseq_t + dxw_{t+1}[z, r] @ U_zr^T, dz and da;
        a barrier; then d(r h) = da @ U_h^T (every unit's da), dr

dh_carry, the elementwise part of dh passed to the step before (dh z, and d(r h) r without
reset_after), is a (batch, units) float32 scratch, read and rewritten chunk by chunk. With a mask
(MASKED) a masked step writes h_t = h_{t-1} (the next step reads it back), and backwards writes
zero gradients and carries dh whole. With recurrent dropout masks (RECURRENT_MASKS, (batch, 3,
units)) each gate's K-chunks of h_{t-1} are times its mask as they load (recurrent_tiled's
times_scaled_matrix; without reset_after the scratch holds r * h_{t-1} * m_h), and backwards dh
is summed gate by gate, each product times its gate's mask (times_gates_transposed).

Under Triton's interpreter a program's block operations run whole, one after another, so a
missing barrier cannot show there: the GPU run's wide_gru case (tests/gpu_cases.py) is the check.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan_gru import GRU_SCAN_MAX_UNITS, saved_blocks
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent_common import (
    ScanCall, activation_flags, for_backward, from_saved, kept_or, load_or_zeros, output_buffers, present, step_kept,
    times_gate_mask,
)
from kcomp.kernels.recurrent_gru import GruScanBinding, GruScanGradBinding
from kcomp.kernels.recurrent_tiled import (
    INTERPRETER_BLOCKS, tile_configs, times_gates_transposed, times_matrix, times_scaled_matrix,
)
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Group, Template


@triton.jit
def _chunk(j, units, row_ok, BLOCK_H: tl.constexpr):
    """(cols, col_ok, ok) of the chunk of units starting at j."""
    cols = j + tl.arange(0, BLOCK_H)
    col_ok = cols < units
    return cols, col_ok, row_ok & col_ok[None, :]


@triton.jit
def _times_u(A, a_rows, row_ok, K, U, cols, col_ok, units, TRANSPOSED: tl.constexpr, PRECISION: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """A's rows (K long) @ U's columns `cols`, or (TRANSPOSED) @ U^T's: U's rows `cols`, its
    columns the K."""
    if TRANSPOSED:
        return times_matrix(A, a_rows, row_ok, K, U, cols, col_ok, 1, 3 * units, PRECISION, BLOCK_B, BLOCK_H,
                            BLOCK_K)
    return times_matrix(A, a_rows, row_ok, K, U, cols, col_ok, 3 * units, 1, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)


@triton.jit
def _gate_product(H, h_rows, row_ok, K, RMASKS, mask_rows, gate, RECURRENT_MASKS: tl.constexpr, U, cols, col_ok,
                  units, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """h_{t-1} (its K units from h_rows; times the gate's recurrent dropout mask where
    RECURRENT_MASKS) @ the gate's columns `cols` of U."""
    return times_scaled_matrix(H, h_rows, row_ok, K, RMASKS, mask_rows + gate * units, RECURRENT_MASKS, U,
                               cols + gate * units, col_ok, 3 * units, 1, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)


@triton.jit
def gru_scan_tiled_kernel(
    XW, U, RB, MASK, RMASKS, HSEQ, SAVED, ZR, n_batch, n_steps, units,
    HAS_BIAS: tl.constexpr, RESET_AFTER: tl.constexpr, SAVE: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    S: tl.constexpr = 4 if RESET_AFTER else 3  # the saved blocks per step: z, r, c (and h @ U_h + b_h)
    xw_rows = rows[:, None].to(tl.int64) * n_steps * 3 * units  # (row, step 0, gate 0, unit 0)
    saved_rows = rows[:, None].to(tl.int64) * n_steps * S * units
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units
    zr_rows = rows[:, None].to(tl.int64) * 2 * units  # the scratch (batch, 2 * units): z, then r * h_{t-1} (* m_h)
    mask_rows = rows[:, None].to(tl.int64) * 3 * units  # (row, gate 0, unit 0) of the recurrent dropout masks
    for t in range(0, n_steps):
        h_prev = seq_rows + (t - 1) * units  # h_{t-1}: this row's step t-1 of the h sequence
        k_prev = units * (t > 0)  # h_0 = 0: no product at the first step
        has_prev = (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + t) > 0  # a tensor: t may be a Python int
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(0, units, BLOCK_H):
            cols, col_ok, ok = _chunk(j, units, row_ok, BLOCK_H)
            x = XW + xw_rows + t * 3 * units + cols[None, :]
            b_ok = col_ok[None, :]
            a_z = tl.load(x, mask=ok, other=0.0).to(tl.float32) + load_or_zeros(  # the pre-activations
                RB, cols[None, :], b_ok, HAS_BIAS, 1, BLOCK_H) + _gate_product(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows, 0, RECURRENT_MASKS, U, cols, col_ok, units, PRECISION,
                BLOCK_B, BLOCK_H, BLOCK_K)
            a_r = tl.load(x + units, mask=ok, other=0.0).to(tl.float32) + load_or_zeros(
                RB, units + cols[None, :], b_ok, HAS_BIAS, 1, BLOCK_H) + _gate_product(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows, 1, RECURRENT_MASKS, U, cols, col_ok, units, PRECISION,
                BLOCK_B, BLOCK_H, BLOCK_K)
            z, r = RACT(a_z), RACT(a_r)
            h_old = tl.load(HSEQ + h_prev + cols[None, :], mask=ok & has_prev, other=0.0).to(tl.float32)
            saved = SAVED + saved_rows + t * S * units + cols[None, :]
            if SAVE:
                tl.store(saved, for_backward(a_z, z, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
                tl.store(saved + units, for_backward(a_r, r, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
            if RESET_AFTER:
                h_h = load_or_zeros(RB, 2 * units + cols[None, :], b_ok, HAS_BIAS, 1, BLOCK_H) + _gate_product(
                    HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows, 2, RECURRENT_MASKS, U, cols, col_ok, units,
                    PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
                a_c = tl.load(x + 2 * units, mask=ok, other=0.0).to(tl.float32) + r * h_h
                c = ACT(a_c)
                h = kept_or(keep, z * h_old + (1.0 - z) * c, h_old, MASKED)  # a masked step keeps h
                tl.store(HSEQ + seq_rows + t * units + cols[None, :], h.to(HSEQ.dtype.element_ty), mask=ok)
                if SAVE:
                    tl.store(saved + 2 * units, for_backward(a_c, c, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
                    tl.store(saved + 3 * units, h_h.to(SAVED.dtype.element_ty), mask=ok)
            else:
                tl.store(ZR + zr_rows + cols[None, :], z, mask=ok)
                h_c = times_gate_mask(h_old, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)  # c's h_{t-1}
                tl.store(ZR + zr_rows + units + cols[None, :], r * h_c, mask=ok)
        if not RESET_AFTER:
            tl.debug_barrier()  # every unit's r * h_{t-1} written before c's product reads them
            for j in range(0, units, BLOCK_H):
                cols, col_ok, ok = _chunk(j, units, row_ok, BLOCK_H)
                a_c = tl.load(XW + xw_rows + t * 3 * units + 2 * units + cols[None, :], mask=ok, other=0.0).to(
                    tl.float32) + _times_u(ZR, zr_rows + units, row_ok, units, U, cols + 2 * units, col_ok, units,
                                           False, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
                c = ACT(a_c)
                z = tl.load(ZR + zr_rows + cols[None, :], mask=ok, other=0.0)
                h_old = tl.load(HSEQ + h_prev + cols[None, :], mask=ok & has_prev, other=0.0).to(tl.float32)
                h = kept_or(keep, z * h_old + (1.0 - z) * c, h_old, MASKED)
                tl.store(HSEQ + seq_rows + t * units + cols[None, :], h.to(HSEQ.dtype.element_ty), mask=ok)
                if SAVE:
                    tl.store(SAVED + saved_rows + t * S * units + 2 * units + cols[None, :],
                             for_backward(a_c, c, SAVE_PRE).to(SAVED.dtype.element_ty), mask=ok)
        tl.debug_barrier()  # all of h_t written (and the scratch read) before step t+1


@triton.jit
def gru_scan_grad_tiled_kernel(
    U, HSEQ, SAVED, MASK, RMASKS, DSEQ, DH, DXW, DHU, DHRUN, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, RESET_AFTER: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, ACT_GRAD: tl.constexpr, RACT_GRAD: tl.constexpr,
    SAVE_PRE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    S: tl.constexpr = 4 if RESET_AFTER else 3
    xw_rows = rows[:, None].to(tl.int64) * n_steps * 3 * units
    saved_rows = rows[:, None].to(tl.int64) * n_steps * S * units
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units
    last_rows = rows[:, None].to(tl.int64) * units
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        next_rows = xw_rows + (t + 1) * 3 * units  # step t+1 of dxw (or dhu), written by the step before this one
        has_next = (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + s) > 0
        has_prev = (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + t) > 0
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(0, units, BLOCK_H):
            cols, col_ok, ok = _chunk(j, units, row_ok, BLOCK_H)
            last = last_rows + cols[None, :]
            if RESET_AFTER:  # dh from step t+1's recurrent product dhu = (dz, dr, da r): K over the 3 gates
                dh_in = times_gates_transposed(DHU, next_rows, row_ok, units * (s > 0), U, cols, col_ok, RMASKS, rows,
                                               ok, units, 3, 3, RECURRENT_MASKS, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            else:  # from step t+1's dz, dr (its d(r h) @ U_h^T part is in the carry)
                dh_in = times_gates_transposed(DXW, next_rows, row_ok, units * (s > 0), U, cols, col_ok, RMASKS, rows,
                                               ok, units, 3, 2, RECURRENT_MASKS, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            dh_in += tl.load(DHRUN + last, mask=ok & has_next, other=0.0)
            if HAS_DH:
                dh_in += tl.load(DH + last, mask=ok & ~has_next, other=0.0).to(tl.float32)
            if HAS_DSEQ:
                dh_in += tl.load(DSEQ + seq_rows + t * units + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            dh = kept_or(keep, dh_in, 0.0, MASKED)  # a masked step: zero gradients for its xw
            saved = SAVED + saved_rows + t * S * units + cols[None, :]
            s_z = tl.load(saved, mask=ok, other=0.0).to(tl.float32)  # each gate as saved (for_backward)
            s_c = tl.load(saved + 2 * units, mask=ok, other=0.0).to(tl.float32)
            z, c = from_saved(s_z, RACT, SAVE_PRE), from_saved(s_c, ACT, SAVE_PRE)
            h_prev = tl.load(HSEQ + seq_rows + (t - 1) * units + cols[None, :], mask=ok & has_prev, other=0.0).to(
                tl.float32)
            dz = RACT_GRAD(s_z, z, dh * (h_prev - c))
            da = ACT_GRAD(s_c, c, dh * (1.0 - z))  # of the candidate's pre-activation
            out = xw_rows + t * 3 * units + cols[None, :]
            tl.store(DXW + out, dz.to(DXW.dtype.element_ty), mask=ok)
            tl.store(DXW + out + 2 * units, da.to(DXW.dtype.element_ty), mask=ok)
            if RESET_AFTER:
                s_r = tl.load(saved + units, mask=ok, other=0.0).to(tl.float32)
                r = from_saved(s_r, RACT, SAVE_PRE)
                dr = RACT_GRAD(s_r, r, da * tl.load(saved + 3 * units, mask=ok, other=0.0).to(tl.float32))
                tl.store(DXW + out + units, dr.to(DXW.dtype.element_ty), mask=ok)
                tl.store(DHU + out, dz.to(DHU.dtype.element_ty), mask=ok)
                tl.store(DHU + out + units, dr.to(DHU.dtype.element_ty), mask=ok)
                tl.store(DHU + out + 2 * units, (da * r).to(DHU.dtype.element_ty), mask=ok)
            # every thread has read its carry before any overwrites it (the layouts are the compiler's)
            tl.debug_barrier()
            tl.store(DHRUN + last, kept_or(keep, dh * z, dh_in, MASKED), mask=ok)  # a masked step carries dh whole
        if not RESET_AFTER:
            tl.debug_barrier()  # every unit's da written before d(r h) = da @ U_h^T reads them
            for j in range(0, units, BLOCK_H):
                cols, col_ok, ok = _chunk(j, units, row_ok, BLOCK_H)
                # U_h^T[k, unit] = U[unit, 2 units + k]: U's h block, its rows the chunk's units
                d_rh = _times_u(DXW, xw_rows + t * 3 * units + 2 * units, row_ok, units, U + 2 * units, cols, col_ok,
                                units, True, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
                s_r = tl.load(SAVED + saved_rows + t * S * units + units + cols[None, :], mask=ok, other=0.0).to(
                    tl.float32)
                r = from_saved(s_r, RACT, SAVE_PRE)
                h_prev = tl.load(HSEQ + seq_rows + (t - 1) * units + cols[None, :], mask=ok & has_prev,
                                 other=0.0).to(tl.float32)
                h_c = times_gate_mask(h_prev, RMASKS, rows, cols, ok, units, 2, 3, RECURRENT_MASKS)  # c's h_{t-1}
                dr = RACT_GRAD(s_r, r, d_rh * h_c)  # zero at a masked step: its da is
                tl.store(DXW + xw_rows + t * 3 * units + units + cols[None, :], dr.to(DXW.dtype.element_ty), mask=ok)
                last = last_rows + cols[None, :]
                carry = tl.load(DHRUN + last, mask=ok, other=0.0)
                tl.debug_barrier()  # as above: read before rewritten
                tl.store(DHRUN + last, carry + times_gate_mask(d_rh * r, RMASKS, rows, cols, ok, units, 2, 3,
                                                               RECURRENT_MASKS), mask=ok)
        tl.debug_barrier()  # all of step t's gradients written before step t-1 reads them


# --- launch -----------------------------------------------------------------------------------


# The on-chip templates' bindings (gen_recurrent fills both), as classes of this module: AOT
# recording finds the kernels to record through the module of the launch's binding.
@dataclass(frozen=True, kw_only=True)
class GruTiledScanBinding(GruScanBinding):
    pass


@dataclass(frozen=True, kw_only=True)
class GruTiledScanGradBinding(GruScanGradBinding):
    pass


def _candidates(call, interpret: bool) -> list[dict]:
    if interpret:
        return [INTERPRETER_BLOCKS]
    # The tiled LSTM's tiles (recurrent_tiled.py), in another order. Measured for sm_90 (the eight
    # kernels: forward and backward, reset_after and not, masked and not): each compiles without
    # spills at 128, 256 and 1024 units (92 to 128 registers); at 70 units (no 16 divides it:
    # unvectorized loads, up to 255 registers) only the first, which AOT builds, has no spill in
    # any of the eight, the others spill 8 to 48 bytes in one to three of them.
    # Saving pre-activations (save_pre: gelu and hard_sigmoid measured) the first spills 16 bytes in
    # the reset_after backward at 128, 256 and 1024 units, where (16, 64, 64, 4) spills in none of
    # the four kernels; at 70 that one spills 40 bytes (backward, reset_after=False) and the first none.
    # With recurrent dropout masks and a step mask, at 70 units each of these spills 8 to 336 bytes
    # in one of the four kernels (the first: 24 in the backward without reset_after);
    # RECURRENT_MASKS_TILES (the LSTM's) spill in none, with or without a step mask, at 70, 128,
    # 256, 500 and 1024 units (forward / backward registers: 222-242 / 234-246 at 70 and 500,
    # 127-164 / 111-118 at 128, 256 and 1024), so they come first there. (Both at once: not measured.)
    tiles = ((16, 64, 32, 4), (16, 64, 64, 4), (32, 64, 32, 8), (64, 32, 32, 8))
    if call.binding.save_pre and call.units % 16 == 0:
        tiles = (tiles[1], tiles[0], *tiles[2:])
    return tile_configs(tiles, call.binding.recurrent_masks is not None)


def launch_scan(binding: GruTiledScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the projected inputs, U, the recurrent bias and the masks contiguous (an absent one: never read)
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    bias, *masks = present(inputs, (binding.recurrent_bias, binding.mask, binding.recurrent_masks), u)
    n, steps, units = xw.shape[0], xw.shape[1], u.shape[0]
    # allocate: every h_t, what the backward reads (those nothing reads: scratch), and without
    # reset_after the step's z and r * h_{t-1} (float32 whatever the dtype)
    seq = (n, steps, units)
    shapes = (seq, (n, steps, saved_blocks(binding.reset_after) * units)) if binding.save else (seq,)
    out, buffers = output_buffers(binding.outputs, shapes, out, xw)
    zr = torch.empty((n, 2 * units) if not binding.reset_after else (1,), device=xw.device, dtype=torch.float32)
    tensors = (xw, u, bias, *masks, buffers[0], buffers[-1], zr)  # SAVED unused (never written) without save
    run_scan(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(_candidates)
def run_scan(call: ScanCall, config: dict):
    _launch(gru_scan_tiled_kernel, call, config, HAS_BIAS=call.binding.recurrent_bias is not None,
            SAVE=call.binding.save, **activation_flags(call.binding))


def launch_scan_grad(binding: GruTiledScanGradBinding, inputs, out=None, config=None, precision="tf32",
                     interpret=None):
    # check: U, every h_t, the saved gates, the masks and the gradients present, contiguous
    u, h_seq, saved = (inputs[i].contiguous() for i in (binding.recurrent, binding.h_seq, binding.saved))
    optional = present(inputs, (binding.mask, binding.recurrent_masks, binding.d_seq, binding.d_h), h_seq)
    n, steps, units = h_seq.shape[0], h_seq.shape[1], u.shape[0]
    # allocate: the gradient of every step's xw, and (reset_after) of the recurrent product: the
    # kernel reads step t+1's back, so both are real buffers; and the carried dh (float32)
    shapes = ((n, steps, 3 * units),) * (2 if binding.reset_after else 1)
    out, buffers = output_buffers(binding.outputs, shapes, out, h_seq)
    dh_run = torch.empty((n, units), device=h_seq.device, dtype=torch.float32)
    tensors = (u, h_seq, saved, *optional, buffers[0], buffers[-1], dh_run)  # DHU unused without reset_after
    run_scan_grad(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(_candidates)
def run_scan_grad(call: ScanCall, config: dict):
    _launch(gru_scan_grad_tiled_kernel, call, config, HAS_DSEQ=call.binding.d_seq is not None,
            HAS_DH=call.binding.d_h is not None, **activation_flags(call.binding, grad=True))


def _launch(kernel, call: ScanCall, config: dict, **flags) -> None:
    """One program per BLOCK_B batch rows; the binding's reset_after and masks, then `flags`."""
    kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units, RESET_AFTER=call.binding.reset_after,
        MASKED=call.binding.mask is not None, RECURRENT_MASKS=call.binding.recurrent_masks is not None,
        PRECISION=call.precision, **flags, **config,
    )


# --- grouping: the scans the on-chip templates cannot hold --------------------------------------
def _group(op: str, recurrent_input: int):
    def group(fusion, node):
        return Group(node) if node.op == op and node.inputs[recurrent_input].shape[0] > GRU_SCAN_MAX_UNITS else None

    return group


# Asked before the on-chip gru_scan (84) and gru_scan_grad (85), so these take what those cannot hold.
TEMPLATES = (
    Template("gru_scan_tiled", launch_scan, GruTiledScanBinding, group=_group("gru_scan", 1), priority=82,
             tensor_cores=True),
    Template("gru_scan_grad_tiled", launch_scan_grad, GruTiledScanGradBinding, group=_group("gru_scan_grad", 0),
             priority=83, tensor_cores=True),
)
