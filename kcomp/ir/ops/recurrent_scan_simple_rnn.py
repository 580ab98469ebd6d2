"""SimpleRNN's recurrence alone, forward and backward: what one kernel launch computes.

The decompose pass (kcomp/passes/decompose_recurrent_gru.py) splits a simple_rnn into its input
projection for every time step at once (x @ kernel + bias) and `simple_rnn_scan`:

    h_t = activation(xw_t + h_{t-1} @ recurrent),   h_0 = 0

The backward reads every h_t and, where the activation's derivative needs its input (elu,
gelu, silu, hard_sigmoid, selu, ...: scan_activations.saves_pre), every step's pre-activation
a_t = xw_t + h_{t-1} @ recurrent, which the forward outputs with save=True (the decompose pass
sets it where the graph holds the backward); with an activation whose VJP rule reads only its
output (tanh, sigmoid, relu, linear, exponential, softsign) h_t is enough and nothing more is saved.
`simple_rnn_scan_grad` walks the steps backwards from the gradients of the h_t (every step's,
the last one's; its inputs: the recurrent kernel, every h_t, the pre-activations where
saves_pre) and returns the gradient of xw for every step; the kernel's, the recurrent kernel's
and the bias's gradients are then matmuls and a sum, which the pass emits around it.
With masked=True both take the step mask as lstm_scan does (recurrent_scan.py): a masked step
keeps h, and backwards gives zero gradient to its pre-activation and passes dh to the step before.
With recurrent_masks=True (recurrent_dropout in training) both take one more input after the
mask, (batch, 1, units) drawn once per sequence: h_{t-1} times it before its product
(recurrent_scan.times_gates), and backwards dh_{t-1} = (dz_t @ U^T) times it.
"""

import torch

from kcomp.errors import ArgumentError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.recurrent import cell_activation
from kcomp.ir.ops.recurrent_scan import (
    MASKED_ATTR, SCAN_MAX_UNITS, carry, check_gate_masks, check_like, check_mask, kept, recurrent_masks_attr,
    scan_units, split_present, times_gates,
)
from kcomp.ir.ops.scan_activations import ACTIVATION_ATTR, gate_vjp, saves_pre
from kcomp.ir.types import TensorSpec

# The largest hidden size the simple_rnn_scan kernels hold in registers (kernels/
# recurrent_simple_rnn.py); above it the tiled ones (kernels/recurrent_tiled_simple_rnn.py) keep
# h in global memory, up to recurrent_scan.SCAN_TILED_MAX_UNITS; the decompose pass leaves larger
# layers whole.
SIMPLE_RNN_SCAN_MAX_UNITS = SCAN_MAX_UNITS


def check_save(activation: str, save: bool) -> None:
    """save=True outputs the pre-activations, which only an activation whose derivative needs its
    input makes the backward read (saves_pre): with another, h is enough and nothing is saved."""
    if save and not saves_pre(activation):
        raise ArgumentError(f"simple_rnn_scan: Received save=True with activation={activation!r}, whose derivative "
                            "is a function of its output: the backward reads h alone. Use save=False.")


def _scan_parts(inputs, masked, recurrent_masks):
    """(xw, recurrent, the mask or None, the recurrent masks or None)."""
    return split_present(inputs, 2, "simple_rnn_scan", masked=masked, recurrent_masks=recurrent_masks)


def _scan_infer(inputs, activation, masked, recurrent_masks=False, save=False):
    check_save(activation, save)
    xw, recurrent, mask, gate_masks = _scan_parts(inputs, masked, recurrent_masks)
    units = scan_units(xw, recurrent, "simple_rnn_scan", gates=1)
    check_mask("simple_rnn_scan", mask, xw)
    check_gate_masks("simple_rnn_scan", gate_masks, 1, units, xw)
    seq = TensorSpec((*xw.shape[:2], units), xw.dtype)
    return [seq, seq] if save else [seq]


def simple_rnn_scan_reference(*inputs, activation, masked=False, recurrent_masks=False, save=False):
    xw, recurrent, mask, gate_masks = _scan_parts(inputs, masked, recurrent_masks)
    act = cell_activation(activation)
    h = xw.new_zeros(xw.shape[0], recurrent.shape[0])
    hs, pre = [], []
    for t, x in enumerate(xw.unbind(1)):
        pre.append(x + times_gates(h, recurrent, gate_masks))  # also at a masked step, whose h is kept
        h = carry(kept(mask, t), act(pre[-1]), h)
        hs.append(h)
    h_seq = torch.stack(hs, dim=1)
    return (h_seq, torch.stack(pre, dim=1)) if save else h_seq


def _grad_parts(inputs, activation, has_dseq, has_dh, masked, recurrent_masks):
    """(recurrent, h_seq, the pre-activations, the mask, the recurrent masks, d_seq, d_h), None where
    absent (the pre-activations: where the activation's derivative needs its input, saves_pre)."""
    return split_present(inputs, 2, "simple_rnn_scan_grad", pre_seq=saves_pre(activation), masked=masked,
                         recurrent_masks=recurrent_masks, has_dseq=has_dseq, has_dh=has_dh)


def _grad_infer(inputs, activation, has_dseq, has_dh, masked, recurrent_masks=False):
    recurrent, h_seq, pre, mask, gate_masks, dseq, dh = _grad_parts(inputs, activation, has_dseq, has_dh, masked,
                                                                    recurrent_masks)
    units = scan_units(h_seq, recurrent, "simple_rnn_scan_grad", gates=1)
    check_mask("simple_rnn_scan_grad", mask, h_seq)
    check_gate_masks("simple_rnn_scan_grad", gate_masks, 1, units, h_seq)
    n, t = h_seq.shape[:2]
    check_like("simple_rnn_scan_grad", h_seq.dtype, (("pre_seq", pre, (n, t, units)), ("d_seq", dseq, (n, t, units)),
                                                     ("d_h", dh, (n, units))))
    return [TensorSpec(h_seq.shape, h_seq.dtype)]


def simple_rnn_scan_grad_reference(*inputs, activation, has_dseq, has_dh, masked=False, recurrent_masks=False):
    recurrent, h_seq, pre, mask, gate_masks, dseq, dh_last = _grad_parts(inputs, activation, has_dseq, has_dh, masked,
                                                                         recurrent_masks)
    dh_next = dh_last if dh_last is not None else h_seq.new_zeros(h_seq.shape[0], h_seq.shape[2])
    dz = []
    for t in reversed(range(h_seq.shape[1])):
        dh = dh_next + (dseq[:, t] if dseq is not None else 0)
        keep = kept(mask, t)
        saved = h_seq[:, t] if pre is None else pre[:, t]  # h_t is the activation of pre_t at a read step
        dz.append(carry(keep, gate_vjp(activation, saved, dh, pre is not None), torch.zeros_like(dh)))
        dh_next = times_gates(dz[-1], recurrent, gate_masks, transposed=True) \
            + carry(keep, torch.zeros_like(dh), dh)  # a masked step passes dh on
    return torch.stack(dz[::-1], dim=1)


OPS = [
    OpDef(
        name="simple_rnn_scan",
        doc="SimpleRNN's recurrence h_t = activation(xw_t + h_{t-1} @ recurrent) over projected inputs xw "
        "(batch, time, units) (a masked step keeps h; recurrent_masks: h_{t-1} times the recurrent dropout mask); "
        "outputs every h_t and, with save=True (an activation whose derivative needs its input), every step's "
        "pre-activation xw_t + h_{t-1} @ recurrent.",
        num_inputs=(2, 4),
        attrs={"activation": ACTIVATION_ATTR, "masked": MASKED_ATTR, "recurrent_masks": recurrent_masks_attr(1),
               "save": attr(bool, False, doc="also output the pre-activations (only where saves_pre(activation))")},
        infer=_scan_infer,
        reference=simple_rnn_scan_reference,
        traits={"recurrent"},
        num_outputs=None,
    ),
    OpDef(
        name="simple_rnn_scan_grad",
        doc="The gradient of simple_rnn_scan's projected inputs for every step, walking time backwards; inputs: "
        "the recurrent kernel, every h_t, the pre-activations simple_rnn_scan saved (where the activation's "
        "derivative needs its input), the mask (masked), the recurrent dropout masks (recurrent_masks), then the "
        "gradients present (has_dseq: of every h_t; "
        "has_dh: of the last h).",
        num_inputs=(2, 7),
        attrs={"activation": ACTIVATION_ATTR, "has_dseq": attr(bool), "has_dh": attr(bool),
               "masked": MASKED_ATTR, "recurrent_masks": recurrent_masks_attr(1)},
        infer=_grad_infer,
        reference=simple_rnn_scan_grad_reference,
        traits={"recurrent"},
    ),
]
