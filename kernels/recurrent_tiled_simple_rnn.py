"""SimpleRNN recurrence templates for hidden sizes above the on-chip limit: h in global memory.

kernels/recurrent_simple_rnn.py holds a program's h and U in registers up to
SIMPLE_RNN_SCAN_MAX_UNITS units. Above that, up to SCAN_TILED_MAX_UNITS, these templates take the
simple_rnn_scan and simple_rnn_scan_grad nodes (the fusion pass asks them first; they refuse what
the on-chip ones hold), on the tiled LSTM's pattern (recurrent_tiled.py, whose times_matrix and
step_mask they use): one launch per layer, each program owning BLOCK_B batch rows and walking
every time step, a step run chunk by chunk of BLOCK_H units:

    forward   a_t[:, chunk] = xw_t[:, chunk] + sum over K-chunks of h_{t-1}[:, K] @ U[K, chunk]
              h_t[:, chunk] = activation(a_t[:, chunk])
    backward  dh_t[:, chunk] = dseq_t + sum over K-chunks of dz_{t+1}[:, K] @ U[chunk, K]^T
              dz_t[:, chunk] = dh_t * activation'(a_t)

activation' from h_t where the activation's derivative is a function of its output, else from
a_t, which the forward writes (SAVE) and the backward reads (SAVE_PRE), as the on-chip ones.

h_{t-1} is the h sequence output itself (the row's step t-1), dz_{t+1} the dz output's step t+1:
every chunk reads the whole previous step, so a barrier (tl.debug_barrier) ends each step. Only
the program that wrote a row reads it, so no grid-wide sync is needed.

With a mask (MASKED) a masked step keeps h (the chunk of h_{t-1} it reads back), and backwards
gives its pre-activation zero gradient and passes dh on: the dh a masked step passes to the step
before is a (batch, units) float32 scratch, written after each chunk has read the previous one.
With a recurrent dropout mask (RECURRENT_MASKS, (batch, 1, units)) h_{t-1}'s K-chunks are times
it as they load, and backwards dz_{t+1} @ U^T is times it (recurrent_tiled's
times_scaled_matrix and times_gates_transposed, the LSTM's).

Under Triton's interpreter a missing barrier cannot show (block operations run whole, one after
another): the GPU run's wide_sequences case (tests/gpu_cases.py) is the check. Every program
reads all of U every step (U is units^2 floats: 4 MiB at 1024 units, from L2).
"""

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS
from kcomp.ir.ops.recurrent_scan_simple_rnn import SIMPLE_RNN_SCAN_MAX_UNITS
from kcomp.kernels.autotune import tuned
from kcomp.kernels.recurrent_common import ScanCall, for_backward, load_or_zeros, step_kept
from kcomp.kernels.recurrent_simple_rnn import (
    SimpleRnnScanBinding, SimpleRnnScanGradBinding, forward_flags, grad_flags, scan_call, scan_grad_call,
)
from kcomp.kernels.recurrent_tiled import INTERPRETER_BLOCKS, step_mask, times_gates_transposed, times_scaled_matrix
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Group, Template


@triton.jit
def _chunk(j, row_ok, step_at, units, BLOCK_H: tl.constexpr):
    """(cols, col_ok, ok, at): the BLOCK_H units from j, which of them exist, which (row, unit) pairs
    do, and where they sit in a (batch, time, units) sequence at step_at (BLOCK_B, 1): each row's step."""
    cols = j + tl.arange(0, BLOCK_H)
    col_ok = cols < units
    return cols, col_ok, row_ok & col_ok[None, :], step_at + cols[None, :]


@triton.jit
def simple_rnn_scan_tiled_kernel(
    XW, U, MASK, RMASKS, HSEQ, PRE, n_batch, n_steps, units,
    SAVE: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, ACT: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units  # (row, step 0, unit 0): xw's and h's
    mask_rows = rows[:, None].to(tl.int64) * units  # (row, unit 0) of the recurrent dropout mask
    for t in range(0, n_steps):
        h_prev = seq_rows + (t - 1) * units  # h_{t-1}: this row's step t-1 of the h sequence
        k_prev = units * (t > 0)  # h_0 = 0: no product at the first step
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(0, units, BLOCK_H):
            cols, col_ok, ok, at = _chunk(j, row_ok, seq_rows + t * units, units, BLOCK_H)
            z = tl.load(XW + at, mask=ok, other=0.0).to(tl.float32) + times_scaled_matrix(
                HSEQ, h_prev, row_ok, k_prev, RMASKS, mask_rows, RECURRENT_MASKS, U, cols, col_ok, units, 1, PRECISION,
                BLOCK_B, BLOCK_H, BLOCK_K)
            if SAVE:  # the pre-activation, for the backward (a masked step's too)
                tl.store(PRE + at, z.to(PRE.dtype.element_ty), mask=ok)
            h = ACT(z)
            if MASKED:  # a masked step keeps h: its chunk of h_{t-1} (zeros before the first step)
                has_prev = step_mask(t, BLOCK_B, BLOCK_H)
                h = tl.where(keep, h, tl.load(HSEQ + at - units, mask=ok & has_prev, other=0.0).to(tl.float32))
            tl.store(HSEQ + at, h.to(HSEQ.dtype.element_ty), mask=ok)
        tl.debug_barrier()  # all of h_t written before step t+1 reads it


@triton.jit
def simple_rnn_scan_grad_tiled_kernel(
    U, HSEQ, PRE, MASK, RMASKS, DSEQ, DH, DZ, DHRUN, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, MASKED: tl.constexpr, RECURRENT_MASKS: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, ACT: tl.constexpr,
    ACT_GRAD: tl.constexpr, SAVE_PRE: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = (rows < n_batch)[:, None]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units
    last_rows = rows[:, None].to(tl.int64) * units
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        dz_next = seq_rows + (t + 1) * units  # dz_{t+1}, written by the step before this one
        k_next = units * (s > 0)  # none after the last step
        has_next = step_mask(s, BLOCK_B, BLOCK_H)
        keep = step_kept(MASK, rows, t, n_batch, n_steps, MASKED)
        for j in range(0, units, BLOCK_H):
            cols, col_ok, ok, at = _chunk(j, row_ok, seq_rows + t * units, units, BLOCK_H)
            last = last_rows + cols[None, :]
            # dh_t = dz_{t+1} @ U^T (times the recurrent dropout mask, RECURRENT_MASKS)
            dh = times_gates_transposed(DZ, dz_next, row_ok, k_next, U, cols, col_ok, RMASKS, rows, ok, units, 1, 1,
                                        RECURRENT_MASKS, PRECISION, BLOCK_B, BLOCK_H, BLOCK_K)
            if HAS_DH:
                dh += tl.load(DH + last, mask=ok & ~has_next, other=0.0).to(tl.float32)
            if HAS_DSEQ:
                dh += tl.load(DSEQ + at, mask=ok, other=0.0).to(tl.float32)
            h = tl.load(HSEQ + at, mask=ok, other=0.0).to(tl.float32)
            # the derivative at the saved pre-activation (SAVE_PRE), else from h alone (x, unread, is h)
            a = for_backward(load_or_zeros(PRE, at, ok, SAVE_PRE, BLOCK_B, BLOCK_H), h, SAVE_PRE)
            if MASKED:
                dh += tl.load(DHRUN + last, mask=ok & has_next, other=0.0)  # what a masked step t+1 passed on
                dz = tl.where(keep, ACT_GRAD(a, h, dh), 0.0)  # a masked step: zero gradient
                tl.debug_barrier()  # every thread has read its DHRUN before any overwrites it
                tl.store(DHRUN + last, tl.where(keep, 0.0, dh), mask=ok)
            else:
                dz = ACT_GRAD(a, h, dh)
            tl.store(DZ + at, dz.to(DZ.dtype.element_ty), mask=ok)
        tl.debug_barrier()  # all of dz_t written before step t-1 reads it


# --- launch -----------------------------------------------------------------------------------


# The on-chip templates' bindings (gen_recurrent fills both), as classes of this module: AOT
# recording finds the kernels to record through the module of the launch's binding.
@dataclass(frozen=True, kw_only=True)
class SimpleRnnTiledScanBinding(SimpleRnnScanBinding):
    pass


@dataclass(frozen=True, kw_only=True)
class SimpleRnnTiledScanGradBinding(SimpleRnnScanGradBinding):
    pass


def _candidates(call, interpret: bool) -> list[dict]:
    if interpret:
        return [INTERPRETER_BLOCKS]
    # Few programs (one per BLOCK_B rows), each reading all of U every step: a larger BLOCK_B reads
    # it for more rows at once. One stage: the K loops are short (units / BLOCK_K iterations).
    # Measured for sm_90, all four kernels (masked or not, forward and backward): none spills at
    # 70, 128 and 256 units, nor the first and last at 200 and 1024 (the first, which AOT builds:
    # 72-94 registers at 128, 256 and 1024; 216-254 at 70 and 200, sizes 16 does not divide).
    # (16, 64, 32, 4), (32, 64, 32, 8), (32, 64, 64, 8) and (64, 64, 32, 8) spill 8 to 112 bytes
    # in a backward at one of those sizes. With a recurrent dropout mask, a step mask or not, the
    # first spills at none of 70, 128, 200, 500 and 1024 units (forward / backward registers:
    # 226-230 / 217-218 at 70, 200 and 500; 128 / 80 at 128 and 1024).
    return [dict(BLOCK_B=b, BLOCK_H=h, BLOCK_K=k, num_warps=w, num_stages=1)
            for b, h, k, w in ((16, 64, 64, 4), (16, 32, 32, 4), (32, 32, 32, 4), (64, 32, 32, 8))]


def launch_scan(binding: SimpleRnnTiledScanBinding, inputs, out=None, config=None, precision="tf32",
                interpret=None):
    call = scan_call(binding, inputs, out, precision, SCAN_TILED_MAX_UNITS)
    run_scan(call, config, interpret)
    return call.out


@tuned(_candidates)
def run_scan(call: ScanCall, config: dict):
    simple_rnn_scan_tiled_kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units, **forward_flags(call.binding),
        MASKED=call.binding.mask is not None, PRECISION=call.precision, **config,
    )


def launch_scan_grad(binding: SimpleRnnTiledScanGradBinding, inputs, out=None, config=None, precision="tf32",
                     interpret=None):
    call = scan_grad_call(binding, inputs, out, precision, SCAN_TILED_MAX_UNITS)
    # allocate: the dh a masked step passes on (float32 whatever the dtype; without a mask unused)
    dh_run = torch.empty((call.n_batch, call.units), device=call.out.device, dtype=torch.float32)
    run_scan_grad(replace(call, tensors=(*call.tensors, dh_run)), config, interpret)
    return call.out


@tuned(_candidates)
def run_scan_grad(call: ScanCall, config: dict):
    simple_rnn_scan_grad_tiled_kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units, MASKED=call.binding.mask is not None,
        PRECISION=call.precision, **grad_flags(call.binding), **config,
    )


# --- grouping: the scans the on-chip templates cannot hold --------------------------------------
def _group_scan(fusion, node):
    # simple_rnn_scan(xw, recurrent, ...): units are the recurrent kernel's rows
    return Group(node) if node.op == "simple_rnn_scan" and node.inputs[1].shape[0] > SIMPLE_RNN_SCAN_MAX_UNITS else None


def _group_scan_grad(fusion, node):
    # simple_rnn_scan_grad(recurrent, h_seq, ...)
    return Group(node) if node.op == "simple_rnn_scan_grad" and node.inputs[0].shape[0] > SIMPLE_RNN_SCAN_MAX_UNITS \
        else None


# Asked before the on-chip simple_rnn_scan (86) and simple_rnn_scan_grad (87), so these take what those cannot hold.
TEMPLATES = (
    Template("simple_rnn_scan_tiled", launch_scan, SimpleRnnTiledScanBinding, group=_group_scan, priority=78,
             tensor_cores=True),
    Template("simple_rnn_scan_grad_tiled", launch_scan_grad, SimpleRnnTiledScanGradBinding, group=_group_scan_grad,
             priority=79, tensor_cores=True),
)
