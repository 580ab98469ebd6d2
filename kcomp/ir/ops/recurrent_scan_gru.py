"""The GRU's recurrence alone, forward and backward: what one kernel launch computes.

The decompose pass (kcomp/passes/decompose_recurrent_gru.py) splits a gru into its input projection
for every time step at once (x @ kernel + the input bias) and `gru_scan`, which walks the steps
with its activation and recurrent_activation (act, ract: default tanh and sigmoid, Keras's; any
cell activation, kcomp/ir/ops/scan_activations.py), gates in Keras's order z, r, h:

    x_z, x_r, x_h = xw_t;   z = ract(x_z + h @ U_z + b_z);   r = ract(x_r + h @ U_r + b_r)
    reset_after=True  (Keras's default)   c = act(x_h + r * (h @ U_h + b_h))
    reset_after=False                     c = act(x_h + (r * h) @ U_h)
    h_t = z * h + (1 - z) * c,   h_0 = 0

b is the recurrent bias (Keras's second bias row; reset_after only, and only with a bias):
inside the reset gate's product, so it cannot join the input projection's bias. gru_scan returns
every h_t, and with save=True what the backward reads: z, r, c of every step (or their
pre-activations, where scan_activations.saves_pre) and, reset_after,
the candidate's recurrent part h @ U_h + b_h (dr needs it). `gru_scan_grad` walks the steps
backwards from the gradients of the h_t (every step's, the last one's) and returns the gradient
of xw for every step and, reset_after, of the recurrent product h @ U + b (its h block is r times
xw's): the kernel's, the recurrent kernel's and the biases' gradients are then matmuls and sums,
which the pass emits around it. Without reset_after the recurrent kernel's h block multiplies
r * h, so its gradient is (r * h_prev)^T dxw_h, also a matmul (of the pass).

With masked=True both take the scans' step mask (kcomp/ir/ops/recurrent_scan.py) as their last
fixed input (gru_scan: after the recurrent bias; gru_scan_grad: after what gru_scan saved): a
masked step keeps h (h_t = h_{t-1}); backwards its xw (and recurrent product) get zero gradient
and dh passes straight to the step before.

recurrent_masks=True (Keras's recurrent_dropout in training, kcomp/ir/ops/recurrent.py's
_GateDropout) gives both one more input after the mask: (batch, 3, units) masks drawn once per
sequence, each gate's h_{t-1} times its own before its product (recurrent_scan.times_gates):
h @ U_g becomes (h * m_g) @ U_g, and without reset_after c's product (r * h * m_h) @ U_h (Keras's
GRUCell masks h before the reset gate multiplies it). z * h_{t-1} in the new state reads h
unmasked. Backwards d h_{t-1} gathers each gate's product gradient times its mask.
"""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_rank
from kcomp.ir.ops.recurrent import cell_activation
from kcomp.ir.ops.recurrent_scan import (
    MASKED_ATTR, SCAN_MAX_UNITS, SCAN_TILED_MAX_UNITS, carry, check_gate_masks, check_like, check_mask, kept,
    recurrent_masks_attr, scan_units, split_present, times_gates,
)
from kcomp.ir.ops.scan_activations import ACTIVATION_ATTRS, gate_value, gate_vjp, saves_pre
from kcomp.ir.types import TensorSpec

# The largest hidden size the gru_scan kernels hold in registers (kernels/recurrent_gru.py); above
# it the tiled kernels (kernels/recurrent_tiled_gru.py: h in global memory, U read in chunks every
# step) take them, up to GRU_SCAN_TILED_MAX_UNITS, the LSTM's tiled limit. The decompose pass
# leaves larger GRUs whole, for their torch reference.
GRU_SCAN_MAX_UNITS = SCAN_MAX_UNITS
GRU_SCAN_TILED_MAX_UNITS = SCAN_TILED_MAX_UNITS


def saved_blocks(reset_after: bool) -> int:
    """How many (units,) blocks gru_scan saves per step: z, r, c, and reset_after's h @ U_h + b_h."""
    return 4 if reset_after else 3


def _scan_parts(inputs, masked: bool, recurrent_masks: bool) -> tuple:
    """(xw, recurrent, [the recurrent bias] or [], the mask or None, the recurrent masks or None)
    of gru_scan's inputs."""
    xw, recurrent, *rest = inputs
    optional = int(masked) + int(recurrent_masks)
    if len(rest) < optional:
        raise ShapeError(f"gru_scan with masked={masked}, recurrent_masks={recurrent_masks} takes those inputs after "
                         f"its others, received {len(inputs)} inputs.")
    bias, given = rest[:len(rest) - optional], rest[len(rest) - optional:]
    mask = given.pop(0) if masked else None
    return xw, recurrent, bias, mask, given[0] if recurrent_masks else None


def _scan_infer(inputs, reset_after, save, masked, recurrent_masks=False, **activations):
    xw, recurrent, bias, mask, gate_masks = _scan_parts(inputs, masked, recurrent_masks)
    units = scan_units(xw, recurrent, "gru_scan", gates=3)
    check_mask("gru_scan", mask, xw)
    check_gate_masks("gru_scan", gate_masks, 3, units, xw)
    if bias and not reset_after:
        raise ShapeError("gru_scan: a recurrent bias is added only with reset_after=True (Keras's second bias row); "
                         "with reset_after=False the input projection takes the whole bias.")
    if bias and bias[0].shape != (3 * units,):
        raise ShapeError(f"gru_scan: the recurrent bias is {format_shape(bias[0].shape)}; expected "
                         f"{format_shape((3 * units,))}.")
    n, t = xw.shape[:2]
    seq = TensorSpec((n, t, units), xw.dtype)
    return [seq, TensorSpec((n, t, saved_blocks(reset_after) * units), xw.dtype)] if save else [seq]


def _masked_h(h, gate_masks, gate: int):
    """h_{t-1} as gate `gate` reads it: times its recurrent dropout mask, where given."""
    return h if gate_masks is None else h * gate_masks[:, gate]


def gru_scan_reference(*inputs, reset_after, save, masked=False, recurrent_masks=False, activation="tanh",
                       recurrent_activation="sigmoid"):
    xw, recurrent, bias, mask, gate_masks = _scan_parts(inputs, masked, recurrent_masks)
    units = recurrent.shape[0]
    act, ract = cell_activation(activation), cell_activation(recurrent_activation)
    pre = saves_pre(activation, recurrent_activation)
    u_zr, u_h = recurrent[:, :2 * units], recurrent[:, 2 * units:]
    zr_masks = None if gate_masks is None else gate_masks[:, :2]
    h = xw.new_zeros(xw.shape[0], units)
    hs, saved = [], []
    for t, x in enumerate(xw.unbind(1)):
        x_z, x_r, x_h = x.split(units, dim=1)
        if reset_after:
            h_z, h_r, h_h = (times_gates(h, recurrent, gate_masks) + (bias[0] if bias else 0)).split(units, dim=1)
        else:
            h_z, h_r = times_gates(h, u_zr, zr_masks).split(units, dim=1)
        a_z, a_r = x_z + h_z, x_r + h_r  # the pre-activations
        z, r = ract(a_z), ract(a_r)
        a_c = x_h + r * h_h if reset_after else x_h + (r * _masked_h(h, gate_masks, 2)) @ u_h
        c = act(a_c)
        h = carry(kept(mask, t), z * h + (1 - z) * c, h)  # a masked step keeps h
        hs.append(h)
        gates = [a_z, a_r, a_c] if pre else [z, r, c]
        saved.append(torch.cat([*gates, h_h] if reset_after else gates, dim=1))
    h_seq = torch.stack(hs, dim=1)
    return (h_seq, torch.stack(saved, dim=1)) if save else h_seq


def _grad_parts(inputs, has_dseq, has_dh, masked, recurrent_masks):
    """(recurrent, h_seq, saved, mask, recurrent masks, d_seq, d_h), None where absent."""
    return split_present(inputs, 3, "gru_scan_grad", masked=masked, recurrent_masks=recurrent_masks,
                         has_dseq=has_dseq, has_dh=has_dh)


def _grad_infer(inputs, reset_after, has_dseq, has_dh, masked, recurrent_masks=False, **activations):
    recurrent, h_seq, saved, mask, gate_masks, dseq, dh = _grad_parts(inputs, has_dseq, has_dh, masked,
                                                                      recurrent_masks)
    require_rank(h_seq, 3, "gru_scan_grad's h_seq (batch, time, units)")
    check_mask("gru_scan_grad", mask, h_seq)
    n, t, units = h_seq.shape
    check_gate_masks("gru_scan_grad", gate_masks, 3, units, h_seq)
    xw = TensorSpec((n, t, 3 * units), h_seq.dtype)
    scan_units(xw, recurrent, "gru_scan_grad", gates=3)  # the shapes of xw's gradient and U agree
    check_like("gru_scan_grad", h_seq.dtype, (("h_seq", h_seq, (n, t, units)),
                                              ("saved", saved, (n, t, saved_blocks(reset_after) * units)),
                                              ("d_seq", dseq, (n, t, units)), ("d_h", dh, (n, units))))
    return [xw, xw] if reset_after else [xw]


def gru_scan_grad_reference(*inputs, reset_after, has_dseq, has_dh, masked=False, recurrent_masks=False,
                            activation="tanh", recurrent_activation="sigmoid"):
    recurrent, h_seq, saved, mask, gate_masks, dseq, dh_last = _grad_parts(inputs, has_dseq, has_dh, masked,
                                                                           recurrent_masks)
    units = recurrent.shape[0]
    pre = saves_pre(activation, recurrent_activation)
    zr_masks = None if gate_masks is None else gate_masks[:, :2]
    n, steps = h_seq.shape[:2]
    dh_next = dh_last if dh_last is not None else h_seq.new_zeros(n, units)
    dxw, dhu = [], []
    for t in reversed(range(steps)):
        dh_in = dh_next + (dseq[:, t] if dseq is not None else 0)
        keep = kept(mask, t)  # a masked step: zero gradients for its xw, dh passed to the step before
        dh = carry(keep, dh_in, torch.zeros_like(dh_in))
        s_z, s_r, s_c, *h_h = saved[:, t].split(units, dim=1)  # each gate as saved (saved_gate)
        z, r = gate_value(recurrent_activation, s_z, pre), gate_value(recurrent_activation, s_r, pre)
        c = gate_value(activation, s_c, pre)
        h_prev = h_seq[:, t - 1] if t > 0 else torch.zeros_like(dh)
        dz = gate_vjp(recurrent_activation, s_z, dh * (h_prev - c), pre)
        da = gate_vjp(activation, s_c, dh * (1 - z), pre)  # the candidate's pre-activation
        if reset_after:
            dr = gate_vjp(recurrent_activation, s_r, da * h_h[0], pre)
            step_hu = torch.cat([dz, dr, da * r], dim=1)
            dh_next = dh * z + times_gates(step_hu, recurrent, gate_masks, transposed=True)
            dhu.append(step_hu)
        else:
            d_rh = da @ recurrent[:, 2 * units:].t()  # of r * h_prev (times its mask), the h block's matmul input
            dr = gate_vjp(recurrent_activation, s_r, d_rh * _masked_h(h_prev, gate_masks, 2), pre)
            dh_next = dh * z + _masked_h(d_rh * r, gate_masks, 2) + times_gates(
                torch.cat([dz, dr], dim=1), recurrent[:, :2 * units], zr_masks, transposed=True)
        dh_next = dh_next + carry(keep, torch.zeros_like(dh_in), dh_in)
        dxw.append(torch.cat([dz, dr, da], dim=1))
    dxw = torch.stack(dxw[::-1], dim=1)
    return (dxw, torch.stack(dhu[::-1], dim=1)) if reset_after else dxw


OPS = [
    OpDef(
        name="gru_scan",
        doc="The GRU recurrence over projected inputs xw (batch, time, 3 * units) with its activation and "
        "recurrent_activation and gate order z, r, h; inputs xw, the recurrent kernel and, with reset_after and a bias, "
        "the recurrent bias (3 * units,), then the mask (masked; a masked step keeps h), then the recurrent dropout "
        "masks (recurrent_masks). Outputs every h_t, "
        "and with save=True also what gru_scan_grad reads: z, r, the candidate c and (reset_after) h_prev @ U_h + b_h of every step.",
        num_inputs=(2, 5),
        attrs={"reset_after": attr(bool, True), "save": attr(bool, False), "masked": MASKED_ATTR,
               "recurrent_masks": recurrent_masks_attr(3), **ACTIVATION_ATTRS},
        infer=_scan_infer,
        reference=gru_scan_reference,
        traits={"recurrent"},
        num_outputs=None,
    ),
    OpDef(
        name="gru_scan_grad",
        doc="The gradient of gru_scan's projected inputs xw for every step, walking time backwards, and with "
        "reset_after also of its recurrent product h_prev @ U + b; inputs: the recurrent kernel, every h_t, "
        "what gru_scan saved, the mask (masked), the recurrent dropout masks (recurrent_masks), then the "
        "gradients present (has_dseq: of every h_t; has_dh: of the last h).",
        num_inputs=(3, 7),
        attrs={"reset_after": attr(bool, True), "has_dseq": attr(bool), "has_dh": attr(bool), "masked": MASKED_ATTR,
               "recurrent_masks": recurrent_masks_attr(3), **ACTIVATION_ATTRS},
        infer=_grad_infer,
        reference=gru_scan_grad_reference,
        traits={"recurrent"},
        num_outputs=None,
    ),
]
