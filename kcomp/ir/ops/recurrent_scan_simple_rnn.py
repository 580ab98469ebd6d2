"""SimpleRNN's recurrence alone, forward and backward: what one kernel launch computes.

The decompose pass (kcomp/passes/decompose_recurrent.py) splits a simple_rnn into its input
projection for every time step at once (x @ kernel + bias) and `simple_rnn_scan`:

    h_t = activation(xw_t + h_{t-1} @ recurrent),   h_0 = 0,   activation tanh or relu

(the two PyTorch's cells have too; the pass decomposes only those). Every h_t is all the backward
needs: both activations' derivatives are functions of their output (1 - h^2; h > 0).
`simple_rnn_scan_grad` walks the steps backwards from the gradients of the h_t (every step's,
the last one's) and returns the gradient of xw for every step; the kernel's, the recurrent
kernel's and the bias's gradients are then matmuls and a sum, which the pass emits around it.
With masked=True both take the step mask as lstm_scan does (recurrent_scan.py): a masked step
keeps h, and backwards gives zero gradient to its pre-activation and passes dh to the step before.
"""

import torch

from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.recurrent_scan import (
    MASKED_ATTR, SCAN_MAX_UNITS, _mask_given, carry, check_like, check_mask, kept, scan_units, split_masked,
)
from kcomp.ir.types import TensorSpec

# The largest hidden size the simple_rnn_scan kernels hold in registers (kernels/
# recurrent_simple_rnn.py); above it the tiled ones (kernels/recurrent_tiled_simple_rnn.py) keep
# h in global memory, up to recurrent_scan.SCAN_TILED_MAX_UNITS; the decompose pass leaves larger
# layers whole.
SIMPLE_RNN_SCAN_MAX_UNITS = SCAN_MAX_UNITS
SCAN_ACTIVATIONS = ("tanh", "relu")


def _scan_infer(inputs, activation, masked):
    xw, recurrent, *mask = inputs
    units = scan_units(xw, recurrent, "simple_rnn_scan", gates=1)
    check_mask("simple_rnn_scan", *_mask_given(mask, masked, "simple_rnn_scan", 2), xw)
    return [TensorSpec((*xw.shape[:2], units), xw.dtype)]


def simple_rnn_scan_reference(xw, recurrent, *mask, activation, masked=False):
    act = torch.tanh if activation == "tanh" else torch.relu
    h = xw.new_zeros(xw.shape[0], recurrent.shape[0])
    hs = []
    for t, x in enumerate(xw.unbind(1)):
        h = carry(kept(mask[0] if masked else None, t), act(x + h @ recurrent), h)  # a masked step keeps h
        hs.append(h)
    return torch.stack(hs, dim=1)


def _grad_parts(inputs, has_dseq, has_dh, masked):
    return split_masked(inputs, 2, masked, "simple_rnn_scan_grad", has_dseq=has_dseq, has_dh=has_dh)


def _grad_infer(inputs, activation, has_dseq, has_dh, masked):
    recurrent, h_seq, mask, dseq, dh = _grad_parts(inputs, has_dseq, has_dh, masked)
    units = scan_units(h_seq, recurrent, "simple_rnn_scan_grad", gates=1)
    check_mask("simple_rnn_scan_grad", mask, h_seq)
    n, t = h_seq.shape[:2]
    check_like("simple_rnn_scan_grad", h_seq.dtype, (("d_seq", dseq, (n, t, units)), ("d_h", dh, (n, units))))
    return [TensorSpec(h_seq.shape, h_seq.dtype)]


def activation_grad(h, activation):
    """The activation's derivative at the pre-activation that gave h, from h itself."""
    return 1 - h * h if activation == "tanh" else (h > 0).to(h.dtype)


def simple_rnn_scan_grad_reference(*inputs, activation, has_dseq, has_dh, masked=False):
    recurrent, h_seq, mask, dseq, dh_last = _grad_parts(inputs, has_dseq, has_dh, masked)
    dh_next = dh_last if dh_last is not None else h_seq.new_zeros(h_seq.shape[0], h_seq.shape[2])
    dz = []
    for t in reversed(range(h_seq.shape[1])):
        dh = dh_next + (dseq[:, t] if dseq is not None else 0)
        keep = kept(mask, t)
        dz.append(carry(keep, dh * activation_grad(h_seq[:, t], activation), torch.zeros_like(dh)))
        dh_next = dz[-1] @ recurrent.t() + carry(keep, torch.zeros_like(dh), dh)  # a masked step passes dh on
    return torch.stack(dz[::-1], dim=1)


OPS = [
    OpDef(
        name="simple_rnn_scan",
        doc="SimpleRNN's recurrence h_t = activation(xw_t + h_{t-1} @ recurrent) over projected inputs xw "
        "(batch, time, units), activation tanh or relu (a masked step keeps h); outputs every h_t.",
        num_inputs=(2, 3),
        attrs={"activation": attr(str, "tanh", SCAN_ACTIVATIONS), "masked": MASKED_ATTR},
        infer=_scan_infer,
        reference=simple_rnn_scan_reference,
        traits={"recurrent"},
    ),
    OpDef(
        name="simple_rnn_scan_grad",
        doc="The gradient of simple_rnn_scan's projected inputs for every step, walking time backwards; inputs: "
        "the recurrent kernel, every h_t, the mask (masked), then the gradients present (has_dseq: of every h_t; "
        "has_dh: of the last h).",
        num_inputs=(2, 5),
        attrs={"activation": attr(str, "tanh", SCAN_ACTIVATIONS), "has_dseq": attr(bool), "has_dh": attr(bool),
               "masked": MASKED_ATTR},
        infer=_grad_infer,
        reference=simple_rnn_scan_grad_reference,
        traits={"recurrent"},
    ),
]
