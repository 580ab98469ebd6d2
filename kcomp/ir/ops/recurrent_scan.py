"""The LSTM's recurrence alone, forward and backward: what one kernel launch computes.

The decompose pass (kcomp/passes/decompose.py) splits an lstm into its input projection for
every time step at once (a matmul, plus the bias) and `lstm_scan`, which walks the time steps:

    z_t = xw_t + h_{t-1} @ recurrent          (gates in Keras's order i, f, c, o)
    i, f, g, o = ract(z_i), ract(z_f), act(z_c), ract(z_o)
    c_t = f * c_{t-1} + i * g,   h_t = o * act(c_t),   h_0 = c_0 = 0

act and ract are the attributes activation and recurrent_activation (default tanh and sigmoid,
Keras's; any cell activation: kcomp/ir/ops/scan_activations.py). It returns every h_t, and
either the last c (save=False) or every c_t and the gates (save=True), which the backward needs:
the activated gates, or their pre-activations z where an activation's derivative needs its
input (scan_activations.saves_pre). `lstm_scan_grad` walks the time steps backwards from the gradients of the
h_t (every step's, the last one's) and of the last c, and returns the gradient of z for
every step: the projection's and the recurrent matmul's gradients are then ordinary matmuls
and a sum over (batch, time), which the pass emits around it.

Every scan (this one, gru_scan, simple_rnn_scan) and its gradient takes an optional mask with
masked=True: (batch, time) 0/1 floats in the order the steps are read, after the scan's own
inputs. A masked step (mask 0) keeps the states: h_t = h_{t-1}, c_t = c_{t-1}, so every output
sequence holds the states as the coarse op carries them (its last step: the coarse op's final
states; zeros at masked steps, zero_output_for_mask, are the decompose pass's zeros_where_masked). Backwards, a masked step's gates get zero gradient and the state gradients pass straight
to the step before.

recurrent_masks=True (Keras's recurrent_dropout in training, kcomp/ir/ops/recurrent.py's
_GateDropout) gives lstm_scan and lstm_scan_grad one more input, after the mask: (batch, 4,
units) masks drawn once per sequence; gate g's product is (h_{t-1} * masks[:, g]) @ U_g, so
backwards d h_{t-1} = sum over g of (dz_g @ U_g^T) * masks[:, g]. (The input dropout masks act
on the projection, outside the scan: the decompose pass.) gru_scan and simple_rnn_scan take theirs
the same way (their modules; times_gates below is every scan reference's masked product).
"""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float, require_rank
from kcomp.ir.ops.recurrent import cell_activation
from kcomp.ir.ops.scan_activations import ACTIVATION_ATTRS, gate_value, gate_vjp, saves_pre, vjp
from kcomp.ir.types import TensorSpec

# The largest hidden size the lstm_scan kernels hold in registers (kernels/recurrent.py); above
# it the tiled kernels (kernels/recurrent_tiled.py) keep h and c in global memory and read U in
# chunks every step, up to SCAN_TILED_MAX_UNITS: the largest size they are tested and compiled
# at (U is then 16 MiB of float32, read from L2 by every program every step). The decompose pass
# leaves larger LSTMs whole, for their torch reference.
SCAN_MAX_UNITS = 64
SCAN_TILED_MAX_UNITS = 1024


def scan_units(xw, recurrent, what: str, gates: int = 4) -> int:
    """The hidden size of a scan over projected inputs xw (batch, time, gates * units) with a
    recurrent kernel (units, gates * units), checked (the GRU's and SimpleRNN's scans too)."""
    require_float(xw, what)
    require_rank(xw, 3, f"{what} (batch, time, {gates} * units)")
    units = recurrent.shape[0]
    if recurrent.shape != (units, gates * units) or xw.shape[2] != gates * units:
        raise ShapeError(f"{what}: the projected inputs {format_shape(xw.shape)} and recurrent kernel "
                         f"{format_shape(recurrent.shape)} must be (batch, time, {gates} * units) and "
                         f"(units, {gates} * units).")
    return units


def split_present(inputs, n_fixed: int, what: str, **present) -> tuple:
    """A scan backward's inputs: the n_fixed leading ones, then for each flag in `present` (in
    order) its gradient where the flag says one is given, else None; the count checked."""
    fixed, grads = list(inputs[:n_fixed]), list(inputs[n_fixed:])
    if len(inputs) < n_fixed or len(grads) != sum(present.values()):
        flags = ", ".join(f"{name}={flag}" for name, flag in present.items())
        raise ShapeError(f"{what} with {flags} takes {n_fixed + sum(present.values())} inputs, received {len(inputs)}.")
    return (*fixed, *(grads.pop(0) if flag else None for flag in present.values()))


def check_mask(what: str, mask, like) -> None:
    """A scan's mask: one value of like's dtype per row and step of like (batch, time, ...)."""
    if mask is not None and (mask.shape != like.shape[:2] or mask.dtype != like.dtype):
        raise ShapeError(f"{what}: the mask is {format_shape(mask.shape)} ({mask.dtype}); expected one 0/1 value per "
                         f"row and step, {format_shape(like.shape[:2])} ({like.dtype}).")


def kept(mask, t):
    """Which rows read step t, (batch, 1) bools; None without a mask (every row)."""
    return None if mask is None else (mask[:, t:t + 1] != 0)


def carry(keep, new, old):
    """new where the step is read, else old (the state a masked step keeps, or its gradient's)."""
    return new if keep is None else torch.where(keep, new, old)


def check_like(what: str, dtype, expected) -> None:
    """Each (name, value or None, shape) of `expected`: the value, where given, has that shape and dtype."""
    for name, value, shape in expected:
        if value is not None and (value.shape != shape or value.dtype != dtype):
            raise ShapeError(f"{what}: {name} is {format_shape(value.shape)} ({value.dtype}); expected "
                             f"{format_shape(shape)} ({dtype}).")


def check_gate_masks(what: str, masks, n_gates: int, units: int, like) -> None:
    """A scan's recurrent dropout masks, where given: (batch, gates, units) of like's dtype."""
    check_like(what, like.dtype, (("the recurrent masks", masks, (like.shape[0], n_gates, units)),))


def _scan_infer(inputs, save, masked, recurrent_masks=False, **activations):
    xw, recurrent, mask, gate_masks = split_present(inputs, 2, "lstm_scan", masked=masked,
                                                    recurrent_masks=recurrent_masks)
    units = scan_units(xw, recurrent, "lstm_scan")
    check_mask("lstm_scan", mask, xw)
    check_gate_masks("lstm_scan", gate_masks, 4, units, xw)
    n, t = xw.shape[:2]
    seq = TensorSpec((n, t, units), xw.dtype)
    if save:
        return [seq, seq, TensorSpec(xw.shape, xw.dtype)]
    return [seq, TensorSpec((n, units), xw.dtype)]


def times_gates(h, recurrent, gate_masks, transposed: bool = False):
    """h @ recurrent, or with recurrent dropout masks (batch, gates, units) each gate's h_{t-1}
    times its mask before its product; transposed: the backward's dz @ recurrent^T, each gate's
    product times its mask after (the gradient of h_{t-1} through every gate)."""
    if gate_masks is None:
        return h @ (recurrent.t() if transposed else recurrent)
    units = recurrent.shape[0]
    blocks = recurrent.split(units, dim=1)
    if transposed:
        return sum((dz @ u.t()) * gate_masks[:, g] for g, (dz, u) in enumerate(zip(h.split(units, dim=1), blocks)))
    return torch.cat([(h * gate_masks[:, g]) @ u for g, u in enumerate(blocks)], dim=1)


def _gate_activations(activation: str, recurrent_activation: str) -> tuple:
    """The activation of each gate (i, f, c, o)."""
    return recurrent_activation, recurrent_activation, activation, recurrent_activation


def lstm_scan_reference(xw, recurrent, *extra, save, masked=False, recurrent_masks=False, activation="tanh",
                        recurrent_activation="sigmoid"):
    _, _, mask, gate_masks = split_present((xw, recurrent, *extra), 2, "lstm_scan", masked=masked,
                                           recurrent_masks=recurrent_masks)
    units = recurrent.shape[0]
    names = _gate_activations(activation, recurrent_activation)
    pre = saves_pre(activation, recurrent_activation)
    h = c = xw.new_zeros(xw.shape[0], units)
    hs, cs, gates = [], [], []
    for t, z in enumerate(xw.unbind(1)):
        z = (z + times_gates(h, recurrent, gate_masks)).split(units, dim=1)
        i, f, g, o = (cell_activation(name)(z_gate) for name, z_gate in zip(names, z))
        keep = kept(mask, t)
        c_new = f * c + i * g
        h, c = carry(keep, o * cell_activation(activation)(c_new), h), carry(keep, c_new, c)
        hs.append(h)
        cs.append(c)
        gates.append(torch.cat(z if pre else (i, f, g, o), dim=1))
    h_seq = torch.stack(hs, dim=1)
    if save:
        return h_seq, torch.stack(cs, dim=1), torch.stack(gates, dim=1)
    return h_seq, c


def _grad_parts(inputs, has_dseq, has_dh, has_dc, masked, recurrent_masks):
    """(recurrent, c_seq, gates, mask, recurrent masks, d_seq, d_h, d_c), None where absent."""
    return split_present(inputs, 3, "lstm_scan_grad", masked=masked, recurrent_masks=recurrent_masks,
                         has_dseq=has_dseq, has_dh=has_dh, has_dc=has_dc)


def _grad_infer(inputs, has_dseq, has_dh, has_dc, masked, recurrent_masks=False, **activations):
    recurrent, c_seq, gates, mask, gate_masks, dseq, dh, dc = _grad_parts(inputs, has_dseq, has_dh, has_dc, masked,
                                                                          recurrent_masks)
    units = scan_units(gates, recurrent, "lstm_scan_grad")
    check_mask("lstm_scan_grad", mask, gates)
    check_gate_masks("lstm_scan_grad", gate_masks, 4, units, gates)
    n, t = gates.shape[:2]
    check_like("lstm_scan_grad", gates.dtype, (("c_seq", c_seq, (n, t, units)), ("d_seq", dseq, (n, t, units)),
                                               ("d_h", dh, (n, units)), ("d_c", dc, (n, units))))
    return [TensorSpec(gates.shape, gates.dtype)]


def lstm_scan_grad_reference(*inputs, has_dseq, has_dh, has_dc, masked=False, recurrent_masks=False,
                             activation="tanh", recurrent_activation="sigmoid"):
    recurrent, c_seq, gates, mask, gate_masks, dseq, dh_last, dc_last = _grad_parts(inputs, has_dseq, has_dh, has_dc,
                                                                                    masked, recurrent_masks)
    units = recurrent.shape[0]
    names = _gate_activations(activation, recurrent_activation)
    pre = saves_pre(activation, recurrent_activation)
    n, steps = gates.shape[:2]
    dh_next = dh_last if dh_last is not None else gates.new_zeros(n, units)
    dc_next = dc_last if dc_last is not None else gates.new_zeros(n, units)
    dz = []
    for t in reversed(range(steps)):
        dh = dh_next + (dseq[:, t] if dseq is not None else 0)
        saved = gates[:, t].split(units, dim=1)
        i, f, g, o = (gate_value(name, s, pre) for name, s in zip(names, saved))
        c = c_seq[:, t]
        c_prev = c_seq[:, t - 1] if t > 0 else torch.zeros_like(c)
        act_c = cell_activation(activation)(c)
        dc = dc_next + vjp(activation, c, dh * o)
        keep = kept(mask, t)
        outer = (dc * g, dc * c_prev, dc * i, dh * act_c)  # the gradient of each gate's output
        step = carry(keep, torch.cat([gate_vjp(name, s, d, pre) for name, s, d in zip(names, saved, outer)], dim=1),
                     torch.zeros_like(gates[:, t]))
        dz.append(step)
        dc_next = carry(keep, dc * f, dc_next)  # a masked step passes the state gradients to the step before
        dh_next = times_gates(step, recurrent, gate_masks, transposed=True) + carry(keep, torch.zeros_like(dh), dh)
    return torch.stack(dz[::-1], dim=1)


MASKED_ATTR = attr(bool, False, doc="a (batch, time) mask in the order the steps are read follows the scan's inputs")


def recurrent_masks_attr(gates: int):
    """A scan's recurrent_masks flag (the LSTM's, GRU's and SimpleRNN's scans: 4, 3 and 1 gates)."""
    return attr(bool, False, doc=f"recurrent dropout masks (batch, {gates}, units) follow (after the mask): "
                "gate g reads h_{t-1} * masks[:, g]")


RECURRENT_MASKS_ATTR = recurrent_masks_attr(4)

OPS = [
    OpDef(
        name="lstm_scan",
        doc="The LSTM recurrence over projected inputs xw (batch, time, 4 * units) with its activation and "
        "recurrent_activation (a masked step keeps the states); outputs every h_t and the last c, or with save=True every h_t, every c_t and the "
        "gates (i, f, c, o) that lstm_scan_grad reads: activated, or pre-activations where saves_pre.",
        num_inputs=(2, 4),
        attrs={"save": attr(bool, False), "masked": MASKED_ATTR, "recurrent_masks": RECURRENT_MASKS_ATTR,
               **ACTIVATION_ATTRS},
        infer=_scan_infer,
        reference=lstm_scan_reference,
        traits={"recurrent"},
        num_outputs=None,
    ),
    OpDef(
        name="lstm_scan_grad",
        doc="The gradient of lstm_scan's pre-activation gates z for every step, walking time backwards; "
        "inputs: the recurrent kernel, every c_t and the gates lstm_scan saved, the mask (masked), the recurrent "
        "dropout masks (recurrent_masks), then the gradients present "
        "(has_dseq: of every h_t; has_dh: of the last h; has_dc: of the last c).",
        num_inputs=(3, 8),
        attrs={"has_dseq": attr(bool), "has_dh": attr(bool), "has_dc": attr(bool), "masked": MASKED_ATTR,
               "recurrent_masks": RECURRENT_MASKS_ATTR, **ACTIVATION_ATTRS},
        infer=_grad_infer,
        reference=lstm_scan_grad_reference,
        traits={"recurrent"},
    ),
]
