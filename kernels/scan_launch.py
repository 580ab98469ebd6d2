"""Launch steps the recurrence templates share: allocating a scan's outputs, reading a scan
gradient's operands and flags from its binding.

kernels/recurrent_tiled.py uses these for its lstm_scan and lstm_scan_grad launches; the on-chip
launches in kernels/recurrent.py do the same steps in their own lines, which can call these
instead. A GRU or SimpleRNN scan (another op, the same outputs: every h_t, then the last state,
or every state and what the backward reads) allocates with scan_outputs too.
"""

import torch


def scan_outputs(positions: tuple, shapes: tuple, out, like: torch.Tensor) -> tuple:
    """(out, one buffer per output of the scan op, in the op's order).

    positions: each op output's place among the kernel's outputs, None where nothing reads it
    (a scratch buffer then: the kernel writes it all the same). out: the caller's buffers (one,
    or a tuple in the kernel's order), or None to allocate those read, like `like`."""
    kept = [position for position in positions if position is not None]
    if out is None:
        allocated = tuple(torch.empty(shapes[positions.index(k)], device=like.device, dtype=like.dtype) for k in kept)
        out = allocated[0] if len(allocated) == 1 else allocated
    given = (out,) if len(kept) == 1 else out
    buffers = [given[k] if k is not None else torch.empty(shape, device=like.device, dtype=like.dtype)
               for k, shape in zip(positions, shapes, strict=True)]
    return out, buffers


def lstm_scan_tensors(save: bool, xw, u, buffers) -> tuple:
    """The lstm scan kernels' tensor arguments (XW, U, HSEQ, CSEQ, GATES, CLAST) from scan_outputs'
    buffers: saving, every h_t, c_t and the gates (CLAST unused: the last c is c_seq's); else
    every h_t and the last c (CSEQ and GATES unused, never written). An unused one is another
    tensor of the call: a pointer the kernel never follows."""
    if save:
        h_seq, c_seq, gates = buffers
        return xw, u, h_seq, c_seq, gates, h_seq
    h_seq, c_last = buffers
    return xw, u, h_seq, h_seq, xw, c_last


def grad_operands(binding, inputs) -> tuple:
    """(U, every c_t, the gates, d_seq, d_h, d_c) of an lstm_scan_grad binding, contiguous; an
    absent gradient is the gates tensor, which the kernel never reads in its place."""
    u, c_seq, gates = (inputs[i].contiguous() for i in (binding.recurrent, binding.c_seq, binding.gates))
    d_seq, d_h, d_c = (gates if i is None else inputs[i].contiguous() for i in (binding.d_seq, binding.d_h, binding.d_c))
    return u, c_seq, gates, d_seq, d_h, d_c


def grad_flags(binding) -> dict:
    """The backward kernel's constexprs saying which gradients arrive."""
    return dict(HAS_DSEQ=binding.d_seq is not None, HAS_DH=binding.d_h is not None, HAS_DC=binding.d_c is not None)
