"""SimpleRNN's recurrence alone, forward and backward: what one kernel launch computes.

The decompose pass (kcomp/passes/decompose_recurrent.py) splits a simple_rnn into its input
projection for every time step at once (x @ kernel + bias) and `simple_rnn_scan`:

    h_t = activation(xw_t + h_{t-1} @ recurrent),   h_0 = 0,   activation tanh or relu

(the two PyTorch's cells have too; the pass decomposes only those). Every h_t is all the backward
needs: both activations' derivatives are functions of their output (1 - h^2; h > 0).
`simple_rnn_scan_grad` walks the steps backwards from the gradients of the h_t (every step's,
the last one's) and returns the gradient of xw for every step; the kernel's, the recurrent
kernel's and the bias's gradients are then matmuls and a sum, which the pass emits around it.
"""

import torch

from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.recurrent_scan import SCAN_MAX_UNITS, check_like, scan_units, split_present
from kcomp.ir.types import TensorSpec

# The largest hidden size the simple_rnn_scan kernels hold in registers (kernels/
# recurrent_simple_rnn.py); the decompose pass leaves larger layers whole. A tiled kernel raises it.
SIMPLE_RNN_SCAN_MAX_UNITS = SCAN_MAX_UNITS
SCAN_ACTIVATIONS = ("tanh", "relu")


def _scan_infer(inputs, activation):
    xw, recurrent = inputs
    units = scan_units(xw, recurrent, "simple_rnn_scan", gates=1)
    return [TensorSpec((*xw.shape[:2], units), xw.dtype)]


def simple_rnn_scan_reference(xw, recurrent, activation):
    act = torch.tanh if activation == "tanh" else torch.relu
    h = xw.new_zeros(xw.shape[0], recurrent.shape[0])
    hs = []
    for x in xw.unbind(1):
        h = act(x + h @ recurrent)
        hs.append(h)
    return torch.stack(hs, dim=1)


def _grad_parts(inputs, has_dseq, has_dh):
    return split_present(inputs, 2, "simple_rnn_scan_grad", has_dseq=has_dseq, has_dh=has_dh)


def _grad_infer(inputs, activation, has_dseq, has_dh):
    recurrent, h_seq, dseq, dh = _grad_parts(inputs, has_dseq, has_dh)
    units = scan_units(h_seq, recurrent, "simple_rnn_scan_grad", gates=1)
    n, t = h_seq.shape[:2]
    check_like("simple_rnn_scan_grad", h_seq.dtype, (("d_seq", dseq, (n, t, units)), ("d_h", dh, (n, units))))
    return [TensorSpec(h_seq.shape, h_seq.dtype)]


def activation_grad(h, activation):
    """The activation's derivative at the pre-activation that gave h, from h itself."""
    return 1 - h * h if activation == "tanh" else (h > 0).to(h.dtype)


def simple_rnn_scan_grad_reference(*inputs, activation, has_dseq, has_dh):
    recurrent, h_seq, dseq, dh_last = _grad_parts(inputs, has_dseq, has_dh)
    dh_next = dh_last if dh_last is not None else h_seq.new_zeros(h_seq.shape[0], h_seq.shape[2])
    dz = []
    for t in reversed(range(h_seq.shape[1])):
        dh = dh_next + (dseq[:, t] if dseq is not None else 0)
        dz.append(dh * activation_grad(h_seq[:, t], activation))
        dh_next = dz[-1] @ recurrent.t()
    return torch.stack(dz[::-1], dim=1)


OPS = [
    OpDef(
        name="simple_rnn_scan",
        doc="SimpleRNN's recurrence h_t = activation(xw_t + h_{t-1} @ recurrent) over projected inputs xw "
        "(batch, time, units), activation tanh or relu; outputs every h_t.",
        num_inputs=(2, 2),
        attrs={"activation": attr(str, "tanh", SCAN_ACTIVATIONS)},
        infer=_scan_infer,
        reference=simple_rnn_scan_reference,
        traits={"recurrent"},
    ),
    OpDef(
        name="simple_rnn_scan_grad",
        doc="The gradient of simple_rnn_scan's projected inputs for every step, walking time backwards; inputs: "
        "the recurrent kernel, every h_t, then the gradients present (has_dseq: of every h_t; has_dh: of the last h).",
        num_inputs=(2, 4),
        attrs={"activation": attr(str, "tanh", SCAN_ACTIVATIONS), "has_dseq": attr(bool), "has_dh": attr(bool)},
        infer=_grad_infer,
        reference=simple_rnn_scan_grad_reference,
        traits={"recurrent"},
    ),
]
