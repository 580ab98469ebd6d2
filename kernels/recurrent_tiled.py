"""LSTM recurrence templates for hidden sizes above the on-chip limit: h and c in global memory.

kernels/recurrent.py holds a program's h and c in registers, which fits up to SCAN_MAX_UNITS
units. Above that these templates take the lstm_scan and lstm_scan_grad nodes (the fusion pass
asks them first; they refuse what the on-chip ones hold). The work is split the same way, one
launch per layer, each program owning BLOCK_B batch rows and walking every time step; but a
step's state lives in memory the program itself wrote, and each step runs chunk by chunk:

    forward, step t, for each chunk of BLOCK_H units:
        z[:, gate chunk] = xw_t[:, gate chunk] + sum over K-chunks of h_{t-1}[:, K] @ U[K, gate chunk]
        c = f c_{t-1} + i g,  h = o act(c)               (that chunk's units only)
    backward, step t, for each chunk:
        dh = dseq_t + sum over K-chunks of dz_{t+1}[:, K] @ U[chunk, K]^T   (K over the 4 gates)
        dc = dc_next + dh o act'(c), then dz_t for that chunk's four gates

(the activations: the on-chip templates' hooks and SAVE_PRE, recurrent.py)

h_{t-1} is the h sequence output itself (the row's step t-1), dz_{t+1} the dz output's step
t+1: every chunk reads the whole previous step, so a barrier ends each step (tl.debug_barrier:
the program's writes are visible to all its threads after it). Only the program that wrote a
row reads it, so no grid-wide sync is needed. c_{t-1} is the saved c sequence, or (without it)
the last-c output, updated in place; the backward's dc is a (batch, units) scratch. U is read
from L2 every step, one (BLOCK_K, BLOCK_H) tile per gate at a time.

With a mask (MASKED, as the on-chip kernels: recurrent_common.step_kept / kept_or) a masked
step keeps h and c, and writes them again as its step t (h_{t-1} read back from the h
sequence), so the next step reads them where it always does. Backwards its gates get zero
gradient, dc passes through the running dc, and dh (which the unmasked path rebuilds every step
from dz_{t+1} @ U^T) through a second (batch, units) scratch, the dh a masked step hands on.

With recurrent dropout masks (RECURRENT_MASKS, (batch, 4, units)) each K-chunk of h_{t-1} is
times gate g's mask as it loads (times_scaled_matrix), and backwards dh is summed gate by gate,
each gate's dz_{t+1}[:, gate] @ U_gate^T times that gate's mask (four K loops of units, not one
of 4 units). Measured for sm_90 with the first block-size candidate (registers forward /
backward): a step mask, 206 / 152 at 128 and 256 units, 242 / 236 at 70 and 500; recurrent
masks with or without a step mask (their own first candidate, _candidates), 166-168 / 118-122
at 128, 256 and 1024, 244-248 / 225 at 70 and 500; no spills. (Writing each gate's masked h_t to
a scratch for the next step to read, instead of scaling each K-chunk, spilled 88 bytes at 70.)

`times_matrix` (the chunked product), `times_scaled_matrix` (a gate's h_{t-1} times its mask) and
`times_gates_transposed` (dh through the gates' products) are written for any gate count and
layout: the GRU's and SimpleRNN's tiled templates use them with their own cell updates.

Under Triton's interpreter a program's block operations run whole, one after another, so a
missing barrier cannot show there: the GPU run's wide_sequences case (tests/gpu_cases.py) is
the check. What it costs: every program reads all of U each step (16 MiB at 1024 units) and
there are only batch / BLOCK_B programs, so at large sizes the step is bound by what a few SMs
can read from L2; splitting the units across programs needs a grid-wide sync per step.

Stepwise (a STEPWISE config, scan_launches): the same kernels launched once per time step, each
program owning one BLOCK_B x BLOCK_H block (CHUNK_PER_PROGRAM: the chunk loop runs once, for the
chunk of the grid's second axis), so a step runs on (batch / BLOCK_B) x (units / BLOCK_H)
programs and the launch boundary is the grid-wide sync. A program still owns its chunk's running
c (or dc, dh) from step to step, and reads the whole previous step that the last launch wrote.
Many small launches cost their Python launch time unless replayed from a CUDA graph, as a model's
steps are on a GPU: autotuning times every candidate that way (graph_timed) and keeps the fastest.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan import SCAN_MAX_UNITS
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent import LstmScanBinding, LstmScanGradBinding
from kcomp.kernels.recurrent_common import (
    ScanCall, activation_flags, for_backward, from_saved, kept_or, output_buffers, present, step_kept, times_gate_mask,
)
from kcomp.kernels.scan_launch import grad_flags, grad_operands, lstm_scan_tensors
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Group, Template


@triton.jit
def times_matrix(A, a_rows, a_ok, K, W, w_cols, w_ok, stride_k, stride_col, PRECISION: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """(BLOCK_B, BLOCK_H): sum over k < K of A[a_rows + k] * W[k * stride_k + w_cols * stride_col].

    a_rows (BLOCK_B, 1): where each row of A starts; w_cols (BLOCK_H,): W's columns, strided so
    that a transposed W is stride_k=1. Rows and columns outside a_ok, w_ok read zeros. K may be
    0 (nothing before the first step): the sum is then zeros."""
    return times_scaled_matrix(A, a_rows, a_ok, K, A, a_rows, False, W, w_cols, w_ok, stride_k, stride_col, PRECISION,
                               BLOCK_B, BLOCK_H, BLOCK_K)


@triton.jit
def times_scaled_matrix(A, a_rows, a_ok, K, S, s_rows, SCALED: tl.constexpr, W, w_cols, w_ok, stride_k, stride_col,
                        PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """times_matrix with A's elements times S[s_rows + k] where SCALED (a gate's h_{t-1} times its
    recurrent dropout mask)."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a = tl.load(A + a_rows + ks[None, :], mask=a_ok & k_ok[None, :], other=0.0).to(tl.float32)
        if SCALED:
            a *= tl.load(S + s_rows + ks[None, :], mask=a_ok & k_ok[None, :], other=0.0).to(tl.float32)
        w = tl.load(W + ks[:, None] * stride_k + w_cols[None, :] * stride_col, mask=k_ok[:, None] & w_ok[None, :],
                    other=0.0).to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=PRECISION)
    return acc


@triton.jit
def times_gates_transposed(D, d_rows, row_ok, k_gate, U, cols, col_ok, RMASKS, rows, ok, units, GATES: tl.constexpr,
                           N: tl.constexpr, RECURRENT_MASKS: tl.constexpr, PRECISION: tl.constexpr,
                           BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """The gradient of h_{t-1} through the first N gates' products (a scan backward's dh): the sum
    over those gates of D[:, gate] @ U_gate^T at the units `cols`, D's gate blocks `units` wide
    from d_rows (dz_{t+1}), U (units, GATES * units) (U[unit, k] is W[k, unit] at stride_k 1);
    k_gate: units, or 0 where nothing follows. With recurrent dropout masks (RECURRENT_MASKS,
    RMASKS (batch, GATES, units)) gate by gate, each product times its mask: N K loops of units,
    not one of N units."""
    if RECURRENT_MASKS:
        dh = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
        for gate in tl.static_range(N):
            dh += times_gate_mask(
                times_matrix(D, d_rows + gate * units, row_ok, k_gate, U + gate * units, cols, col_ok, 1,
                             GATES * units, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K),
                RMASKS, rows, cols, ok, units, gate, GATES, True)
        return dh
    return times_matrix(D, d_rows, row_ok, N * k_gate, U, cols, col_ok, 1, GATES * units, PRECISION, BLOCK_B, BLOCK_H,
                        BLOCK_K)


@triton.jit
def chunks_of_program(units, CHUNK_PER_PROGRAM: tl.constexpr, BLOCK_H: tl.constexpr):
    """(first, end) of the units a program walks in BLOCK_H chunks: all of them, or with
    CHUNK_PER_PROGRAM (a stepwise launch) the one chunk its second grid axis names."""
    if CHUNK_PER_PROGRAM:
        first = tl.program_id(1) * BLOCK_H
        end = first + BLOCK_H
    else:
        first = 0
        end = units
    return first, end


@triton.jit
def step_mask(step, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """step > 0 as a (BLOCK_B, BLOCK_H) mask (a tensor: under the interpreter the loop's step is a
    Python int, which a tensor mask cannot be and-ed with)."""
    return (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + step) > 0


# first_step and end_step are not specialized: a stepwise scan's launches differ in them alone, and
# specialized (a value of 1, a multiple of 16) they would compile several variants of one kernel.
@triton.jit(do_not_specialize=["first_step", "end_step"])
def lstm_scan_tiled_kernel(
    XW, U, MASK, RMASKS, HSEQ, CSEQ, GATES, CLAST, n_batch, n_steps, units, first_step, end_step,
    CHUNK_PER_PROGRAM: tl.constexpr, SAVE: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr, ACT: tl.constexpr, RACT: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units  # (row, step 0, gate 0, unit 0)
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units
    last_rows = rows[:, None].to(tl.int64) * units
    mask_rows = rows[:, None].to(tl.int64) * 4 * units  # (row, gate 0, unit 0) of the recurrent dropout masks
    j_first, j_end = chunks_of_program(units, CHUNK_PER_PROGRAM, BLOCK_H)
    for t in range(first_step, end_step):
        h_prev = seq_rows + (t - 1) * units  # h_{t-1}: this row's step t-1 of the h sequence
        k_prev = units * (t > 0)  # h_0 = 0: no product at the first step
        has_prev = step_mask(t, BLOCK_B, BLOCK_H)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(j_first, j_end, BLOCK_H):
            cols = j + tl.arange(0, BLOCK_H)
            col_ok = cols < units
            ok = row_ok & col_ok[None, :]
            z = XW + gate_rows + t * 4 * units + cols[None, :]
            # gate g: h_{t-1} (times its recurrent dropout mask, RECURRENT_MASKS) @ U's gate-g columns
            z_i = tl.load(z, mask=ok, other=0.0).to(tl.float32) + times_scaled_matrix(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows, RECURRENT_MASKS, U, cols, col_ok, 4 * units, 1,
                PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            z_f = tl.load(z + units, mask=ok, other=0.0).to(tl.float32) + times_scaled_matrix(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows + units, RECURRENT_MASKS, U, cols + units, col_ok,
                4 * units, 1, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            z_g = tl.load(z + 2 * units, mask=ok, other=0.0).to(tl.float32) + times_scaled_matrix(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows + 2 * units, RECURRENT_MASKS, U, cols + 2 * units,
                col_ok, 4 * units, 1, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            z_o = tl.load(z + 3 * units, mask=ok, other=0.0).to(tl.float32) + times_scaled_matrix(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows + 3 * units, RECURRENT_MASKS, U, cols + 3 * units,
                col_ok, 4 * units, 1, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            i, f, g, o = RACT(z_i), RACT(z_f), ACT(z_g), RACT(z_o)
            if SAVE:
                c_at = CSEQ + seq_rows + t * units + cols[None, :]
                c_prev = tl.load(c_at - units, mask=ok & has_prev, other=0.0).to(tl.float32)
            else:
                c_at = CLAST + last_rows + cols[None, :]  # the running c: read, then overwritten
                c_prev = tl.load(c_at, mask=ok & has_prev, other=0.0).to(tl.float32)
                # The store below may fall to other threads than this load (the layouts are the
                # compiler's): every thread has read its c_{t-1} before any writes c_t there.
                tl.debug_barrier()
            c = kept_or(keep, f * c_prev + i * g, c_prev, MASKED)  # a masked step keeps c and h: written again
            h = o * ACT(c)                                       # at step t, where step t+1 reads them
            if MASKED:
                h = tl.where(keep, h, tl.load(HSEQ + h_prev + cols[None, :], mask=ok & has_prev, other=0.0).to(tl.float32))
            tl.store(HSEQ + seq_rows + t * units + cols[None, :], h.to(HSEQ.dtype.element_ty), mask=ok)
            tl.store(c_at, c.to(c_at.dtype.element_ty), mask=ok)
            if SAVE:
                saved = GATES + gate_rows + t * 4 * units + cols[None, :]
                tl.store(saved, for_backward(z_i, i, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
                tl.store(saved + units, for_backward(z_f, f, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
                tl.store(saved + 2 * units, for_backward(z_g, g, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
                tl.store(saved + 3 * units, for_backward(z_o, o, SAVE_PRE).to(GATES.dtype.element_ty), mask=ok)
        tl.debug_barrier()  # all of h_t written before step t+1 reads it


@triton.jit(do_not_specialize=["first_step", "end_step"])
def lstm_scan_grad_tiled_kernel(
    U, CSEQ, GATES, MASK, RMASKS, DSEQ, DH, DC, DZ, DCRUN, DHRUN, n_batch, n_steps, units, first_step, end_step,
    CHUNK_PER_PROGRAM: tl.constexpr, HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, HAS_DC: tl.constexpr, MASKED: tl.constexpr,
    RECURRENT_MASKS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    ACT: tl.constexpr, RACT: tl.constexpr, ACT_GRAD: tl.constexpr, RACT_GRAD: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units
    last_rows = rows[:, None].to(tl.int64) * units
    j_first, j_end = chunks_of_program(units, CHUNK_PER_PROGRAM, BLOCK_H)
    for s in range(first_step, end_step):  # s: steps done, from the last time step back
        t = n_steps - 1 - s
        dz_next = gate_rows + (t + 1) * 4 * units  # dz_{t+1}, written by the step before this one
        k_next = units * (s > 0)  # a gate's K: none after the last step
        has_next = step_mask(s, BLOCK_B, BLOCK_H)
        has_prev = step_mask(t, BLOCK_B, BLOCK_H)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(j_first, j_end, BLOCK_H):
            cols = j + tl.arange(0, BLOCK_H)
            col_ok = cols < units
            ok = row_ok & col_ok[None, :]
            last = last_rows + cols[None, :]
            dh = times_gates_transposed(DZ, dz_next, row_ok, k_next, U, cols, col_ok, RMASKS, rows, ok, units, 4, 4,
                                        RECURRENT_MASKS, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            if HAS_DH:
                dh += tl.load(DH + last, mask=ok & ~has_next, other=0.0).to(tl.float32)
            if HAS_DSEQ:
                dh += tl.load(DSEQ + seq_rows + t * units + cols[None, :], mask=ok, other=0.0).to(tl.float32)
            if MASKED:  # the dh masked steps after this one passed through
                dh += tl.load(DHRUN + last, mask=ok & has_next, other=0.0)
            dc_next = tl.load(DCRUN + last, mask=ok & has_next, other=0.0).to(tl.float32)
            if HAS_DC:
                dc_next += tl.load(DC + last, mask=ok & ~has_next, other=0.0).to(tl.float32)
            saved = GATES + gate_rows + t * 4 * units + cols[None, :]
            # each gate as saved (its output, or with SAVE_PRE its pre-activation) and its output
            s_i = tl.load(saved, mask=ok, other=0.0).to(tl.float32)
            s_f = tl.load(saved + units, mask=ok, other=0.0).to(tl.float32)
            s_g = tl.load(saved + 2 * units, mask=ok, other=0.0).to(tl.float32)
            s_o = tl.load(saved + 3 * units, mask=ok, other=0.0).to(tl.float32)
            i, f, g, o = from_saved(s_i, RACT, SAVE_PRE), from_saved(s_f, RACT, SAVE_PRE), \
                from_saved(s_g, ACT, SAVE_PRE), from_saved(s_o, RACT, SAVE_PRE)
            c_at = CSEQ + seq_rows + t * units + cols[None, :]
            c = tl.load(c_at, mask=ok, other=0.0).to(tl.float32)
            c_prev = tl.load(c_at - units, mask=ok & has_prev, other=0.0).to(tl.float32)  # c_0 = 0
            act_c = ACT(c)
            dc = dc_next + ACT_GRAD(c, act_c, dh * o)
            out = DZ + gate_rows + t * 4 * units + cols[None, :]  # a masked step's gates: zero gradient
            tl.store(out, kept_or(keep, RACT_GRAD(s_i, i, dc * g), 0.0, MASKED).to(DZ.dtype.element_ty), mask=ok)
            tl.store(out + units, kept_or(keep, RACT_GRAD(s_f, f, dc * c_prev), 0.0, MASKED).to(DZ.dtype.element_ty),
                     mask=ok)
            tl.store(out + 2 * units, kept_or(keep, ACT_GRAD(s_g, g, dc * i), 0.0, MASKED).to(DZ.dtype.element_ty),
                     mask=ok)
            tl.store(out + 3 * units, kept_or(keep, RACT_GRAD(s_o, o, dh * act_c), 0.0, MASKED).to(DZ.dtype.element_ty),
                     mask=ok)
            tl.debug_barrier()  # every thread has read its dc_next (and dh) before any overwrites it (as c above)
            tl.store(DCRUN + last, kept_or(keep, dc * f, dc_next, MASKED), mask=ok)  # a masked step passes dc
            if MASKED:
                tl.store(DHRUN + last, tl.where(keep, 0.0, dh), mask=ok)  # and dh to the step before
        tl.debug_barrier()  # all of dz_t written before step t-1 reads it


# --- launch -----------------------------------------------------------------------------------


# The on-chip templates' bindings (gen_recurrent fills both), as classes of this module: AOT
# recording finds the kernels to record through the module of the launch's binding.
@dataclass(frozen=True, kw_only=True)
class LstmTiledScanBinding(LstmScanBinding):
    pass


@dataclass(frozen=True, kw_only=True)
class LstmTiledScanGradBinding(LstmScanGradBinding):
    pass


INTERPRETER_BLOCKS = dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32, num_warps=4)  # the smallest tiles tl.dot takes


def _candidates(call, interpret: bool) -> list[dict]:
    if interpret:
        return [INTERPRETER_BLOCKS]
    # Few programs (one per BLOCK_B rows), each reading all of U every step: a larger BLOCK_B reads
    # it for more rows at once. Measured for sm_90 (registers forward saving / not / backward):
    # each of these compiles without spills at 128, 256 and 1024 units; the first, which AOT
    # builds (156 / 124 / 150 registers), also at 70, 100, 200, 300 and 500, sizes no 16 divides
    # (unvectorized loads, more registers: 243 / 156 / 227), where the others spill 8 to 32 bytes.
    # With Triton's default 3 pipeline stages, or tiles (16, 32, 32) or (32, 32, 32) on 4 warps
    # or (64, 64, 32) on 8, one of the three kernels spills at 128 or 256 units. The K loops are
    # short (units / BLOCK_K iterations per gate), so one stage loses little.
    # With recurrent dropout masks (and a step mask) every one of these spills 8 to 72 bytes in the
    # forward at 70 and 500 units; RECURRENT_MASKS_TILES do not (248 / 225 registers at 70 and
    # 500, 168 / 122 at 128), so they come first there.
    # Saving pre-activations (save_pre) with Triton 3.6, the first spills 64 bytes in the forward at
    # 256 units (none with 3.9); RECURRENT_MASKS_TILES come first there too.
    tiles = ((16, 64, 64, 4), (16, 64, 32, 4), (32, 64, 32, 8), (64, 32, 32, 8))
    whole = tile_configs(tiles, call.binding.recurrent_masks is not None or call.binding.save_pre)
    if call.n_steps > STEPWISE_MAX_STEPS:
        return whole
    return whole + [dict(config, STEPWISE=True) for config in tile_configs(STEPWISE_TILES, False)]


# One launch per time step (STEPWISE: scan_launches), each program one BLOCK_B x BLOCK_H block of
# the step: at batch 32 and 256 units, 8 to 32 programs where a whole-sequence launch has one or
# two (LSTM(256) trained at 0.34x of cuDNN on an H200 that way, bench/RESULTS.md 2026-12-04).
# Autotuning times them replayed from a CUDA graph, as a model's captured step runs them
# (graph_timed). Not for very long sequences: a step's launches and their capture grow with them.
# Compiled for sm_90 (forward saving, backward; registers at 256 units): 114 / 79, 92 / 77,
# 101 / 74, 118 / 98, none spilling at 70, 128, 256 or 1024 units with Triton 3.9 (3.6: 70 and 256
# checked); (16, 64, 64) and (16, 32, 32) on 4 warps spilled 8 bytes at some of them
# (tests/test_kernels_recurrent_stepwise.py).
STEPWISE_TILES = ((16, 32, 64, 4), (16, 16, 64, 4), (32, 32, 32, 8), (16, 64, 64, 8))
STEPWISE_MAX_STEPS = 1024


# The tiles a tiled LSTM or GRU scan with recurrent dropout masks tries first: (BLOCK_B, BLOCK_H,
# BLOCK_K) (16, 64, 64) on 8 warps, where their other candidates spill at sizes no 16 divides
# (measured for sm_90: _candidates here, recurrent_tiled_gru's).
RECURRENT_MASKS_TILES = (16, 64, 64, 8)


def tile_configs(tiles, recurrent_masks: bool) -> list[dict]:
    """A tiled scan's block-size configs from its (BLOCK_B, BLOCK_H, BLOCK_K, num_warps) tiles, one
    pipeline stage (the K loops are short); with recurrent dropout masks RECURRENT_MASKS_TILES first."""
    tiles = (RECURRENT_MASKS_TILES, *tiles) if recurrent_masks else tiles
    return [dict(BLOCK_B=b, BLOCK_H=h, BLOCK_K=k, num_warps=w, num_stages=1) for b, h, k, w in tiles]


def launch_scan(binding: LstmTiledScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the projected inputs, U and the mask contiguous (no mask: never read)
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    masks = present(inputs, (binding.mask, binding.recurrent_masks), xw)
    n, steps, units = xw.shape[0], xw.shape[1], u.shape[0]
    # allocate: every h_t, then the last c, or every c_t and the gates (those nothing reads: scratch)
    shapes = ((n, steps, units), (n, steps, units), xw.shape) if binding.save else ((n, steps, units), (n, units))
    out, buffers = output_buffers(binding.outputs, shapes, out, xw)
    tensors = lstm_scan_tensors(binding.save, xw, u, masks, buffers)
    run_scan(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(_candidates, graph_timed=True)
def run_scan(call: ScanCall, config: dict):
    for grid, first, end, per_chunk, blocks in scan_launches(call, config):
        lstm_scan_tiled_kernel[grid](
            *call.tensors, call.n_batch, call.n_steps, call.units, first, end, CHUNK_PER_PROGRAM=per_chunk,
            SAVE=call.binding.save, MASKED=call.binding.mask is not None,
            RECURRENT_MASKS=call.binding.recurrent_masks is not None, PRECISION=call.precision,
            **activation_flags(call.binding), **blocks,
        )


def launch_scan_grad(binding: LstmTiledScanGradBinding, inputs, out=None, config=None, precision="tf32",
                     interpret=None):
    # check: U, every c_t, the gates, the mask and the gradients present, contiguous
    operands = grad_operands(binding, inputs)
    u, gates = operands[0], operands[2]
    n, steps, units = gates.shape[0], gates.shape[1], u.shape[0]
    # allocate: the gradient of every step's gates, the running dc and (masked) the dh that masked
    # steps pass on (float32 whatever the dtype; without a mask dc_run stands in, never read)
    if out is None:
        out = torch.empty_like(gates)
    dc_run = torch.empty((n, units), device=gates.device, dtype=torch.float32)
    dh_run = torch.empty_like(dc_run) if binding.mask is not None else dc_run
    run_scan_grad(ScanCall(binding, inputs, out, (*operands, out, dc_run, dh_run), n, steps, units, precision),
                  config, interpret)
    return out


@tuned(_candidates, graph_timed=True)
def run_scan_grad(call: ScanCall, config: dict):
    for grid, first, end, per_chunk, blocks in scan_launches(call, config):
        lstm_scan_grad_tiled_kernel[grid](
            *call.tensors, call.n_batch, call.n_steps, call.units, first, end, CHUNK_PER_PROGRAM=per_chunk,
            PRECISION=call.precision, **grad_flags(call.binding), MASKED=call.binding.mask is not None,
            **activation_flags(call.binding, grad=True), **blocks,
        )


def scan_launches(call: ScanCall, config: dict):
    """(grid, first step, end step, one chunk per program, block sizes) of each launch of a tiled
    scan: one launch walking every step, where each program owns BLOCK_B rows; or with STEPWISE one
    launch per step, where each program also owns one BLOCK_H chunk of units, so the step runs on
    rows/BLOCK_B x units/BLOCK_H programs (the launch boundary is the step's grid-wide sync)."""
    blocks = {k: v for k, v in config.items() if k != "STEPWISE"}
    rows = cdiv(call.n_batch, config["BLOCK_B"])
    if not config.get("STEPWISE"):
        return [((rows,), 0, call.n_steps, False, blocks)]
    grid = (rows, cdiv(call.units, config["BLOCK_H"]))
    return [(grid, step, step + 1, True, blocks) for step in range(call.n_steps)]


# --- grouping: the scans the on-chip templates cannot hold --------------------------------------
def _group_scan(fusion, node):
    # lstm_scan(xw, recurrent): units are the recurrent kernel's rows
    return Group(node) if node.op == "lstm_scan" and node.inputs[1].shape[0] > SCAN_MAX_UNITS else None


def _group_scan_grad(fusion, node):
    # lstm_scan_grad(recurrent, c_seq, gates, ...)
    return Group(node) if node.op == "lstm_scan_grad" and node.inputs[0].shape[0] > SCAN_MAX_UNITS else None


# Asked before the on-chip lstm_scan (72) and lstm_scan_grad (73), so these take what those cannot hold.
TEMPLATES = (
    Template("lstm_scan_tiled", launch_scan, LstmTiledScanBinding, group=_group_scan, priority=68, tensor_cores=True),
    Template("lstm_scan_grad_tiled", launch_scan_grad, LstmTiledScanGradBinding, group=_group_scan_grad, priority=69,
             tensor_cores=True),
)
