"""Masked recurrent layers on PyTorch's fused kernels, where each row's read steps are one run.

Keras's mask semantics (backend.rnn): a masked step keeps the states and repeats the last output
(zeros with zero_output_for_mask). Where the steps a row reads are contiguous in the order they
are read (pad_sequences' pre- and post-padding, both directions of a Bidirectional), that equals:
run the cell from zero states over the row's read steps alone, then place the outputs back:

    before the run   the states are still the zero initial ones, the output zeros
    in the run       the fused kernel's outputs, in order
    after the run    the states and output of the run's last step (zeros with zero_output_for_mask)

So each row is shifted to start at its first read step (zeros after its run) and the whole
batch runs in one call of torch.lstm / torch.gru / torch.rnn_*; what a row computes after its run
is never read. A row's final h is its output at its run's last step. The LSTM's final c is
the fused call's own final c: the steps after a row's run read one more input feature, 1 there,
whose kernel row adds -HOLD to the input gate's and +HOLD to the forget gate's pre-activation, so
that i = 0 and f = 1 exactly in floating point and c is carried unchanged to the last step (with
zero gradient through those gates: the sigmoid's derivative is 0 there).
(Packed sequences would give the final states directly, but PyTorch's CPU kernels run them
one step at a time: 10x slower than this at batch 32, 500 steps.) Every step is differentiable,
so the backward is autograd's, as for the unmasked fused path. A mask with holes (a row whose
read steps are not one run), a cell PyTorch does not compute, or a CUDA graph being captured (the
runs are found on the host) returns None: the general path in recurrent.py runs it.
"""

import torch

from kcomp.ir.ops.common import can_read_back
from kcomp.ir.ops.recurrent_torch import fused_runner, fused_weights, zero_states


def read_runs(keep: torch.Tensor):
    """(first read step, number of read steps) per row of a (batch, time) bool mask, or None
    where some row's read steps are not one contiguous run. A row that reads no step starts at
    `time`: every step is before its run."""
    steps = torch.arange(keep.shape[1], device=keep.device)
    lengths = keep.sum(1)
    starts = torch.where(keep, steps, keep.shape[1]).amin(1)
    run = (steps >= starts[:, None]) & (steps < (starts + lengths)[:, None])
    return (starts, lengths) if bool((run == keep).all()) else None


def fused_masked(cell: str, x, kernel, recurrent, bias, mask, zero_output_for_mask, activation, recurrent_activation,
                 use_bias, return_sequences, go_backwards, reset_after=True):
    """(sequence or last h, *final states) as the op returns them, or None (see the module's docstring)."""
    run = fused_runner(cell, x.dtype, activation, recurrent_activation, reset_after)
    if run is None or not can_read_back(mask):
        return None
    if go_backwards:  # the sequence and its mask in the order the steps are read
        x, mask = x.flip(1), mask.flip(1)
    runs = read_runs(mask != 0)
    if runs is None:
        return None
    starts, lengths = runs
    time, units = x.shape[1], recurrent.shape[0]
    steps = torch.arange(time, device=x.device)
    in_run = steps < lengths[:, None]  # (batch, time): the shifted rows' read steps
    shifted = (starts[:, None] + steps).clamp(max=time - 1)  # row b's step k of its run: x[b, start_b + k]
    x_run = torch.where(in_run[:, :, None], x.gather(1, shifted[:, :, None].expand(-1, -1, x.shape[2])), 0.0)
    if cell == "lstm":  # the final c carried through the steps after each run (the module's docstring)
        x_run, kernel = _holding_c(x_run, kernel, in_run, units)
    params = fused_weights(cell, kernel, recurrent, bias if use_bias else None, units)
    outputs = run(x_run, zero_states(cell, x, units), params, use_bias, 1, 0.0, True, False, True)
    run_out = outputs[0]
    last = (lengths - 1).clamp(min=0)[:, None]
    k = steps - starts[:, None]  # each read-order step's place in its row's run
    placed = _at_steps(run_out, k.clamp(0, time - 1).minimum(last))  # after the run: its last output
    inside = (k >= 0) & (k < lengths[:, None]) if zero_output_for_mask else k >= 0
    sequence = torch.where(inside[:, :, None], placed, torch.zeros_like(placed))
    read_any = lengths > 0
    h = torch.where(read_any[:, None], _at_steps(run_out, last)[:, 0], 0.0)
    states = (h, outputs[2][0]) if cell == "lstm" else (h,)
    return (sequence if return_sequences else sequence[:, -1], *states)


HOLD = 1e6  # far beyond where float32's and float64's sigmoid round to exactly 0 and 1 (|z| > ~104 / ~745)


def _holding_c(x_run, kernel, in_run, units):
    """x_run with one more feature, 1 after each row's run, and the kernel with its row: -HOLD into
    the input gate, +HOLD into the forget gate (Keras's gate order i, f, c, o)."""
    after = (~in_run).to(x_run.dtype)[:, :, None]
    row = torch.zeros(1, 4 * units, dtype=kernel.dtype, device=kernel.device)
    row[0, :units], row[0, units:2 * units] = -HOLD, HOLD
    return torch.cat([x_run, after], dim=2), torch.cat([kernel, row], dim=0)


def _at_steps(seq, steps):
    """seq (batch, time, units) at each row's `steps` (batch, k): (batch, k, units)."""
    return seq.gather(1, steps[:, :, None].expand(-1, -1, seq.shape[2]))
