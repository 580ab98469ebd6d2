"""Whole-sequence recurrent ops: lstm, gru, simple_rnn.

Each op runs a whole (batch, time, features) sequence, as one kernel will.
Weights use Keras's layouts: kernel (features, G*units), recurrent kernel
(units, G*units), gates in Keras's order (LSTM i, f, c, o; GRU z, r, h).
The first output is the whole sequence (return_sequences) or the last step;
the others are the final states (h, and c for the LSTM).
Initial states are zero. With go_backwards the sequence is read last step
first and the returned sequence is in that (reversed) order, as in Keras.
With masked=True a last input, a (batch, time) mask (nonzero: a step to read), follows the
weights: a masked step keeps the previous states and repeats the previous output, or outputs
zeros with zero_output_for_mask (Keras's backend.rnn; the mask is read in the same order
as the sequence).
The gradient of each op is one coarse backward op (lstm_grad, gru_grad,
simple_rnn_grad in recurrent_grad.py) until a kernel computes it.

The reference runs PyTorch's fused recurrent kernels where they compute Keras's cell
(recurrent_torch.py; with a mask whose read steps are one run per row, recurrent_torch_masked.py),
else the general path below, one cell step per time step. In a graph
run that also holds the op's backward, the forward leaves its autograd tape for it
(kcomp.ir.saved_forwards) rather than have the backward compute it again.
"""

from functools import partial

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir import saved_forwards
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.activations import OPS as ACTIVATION_OPS
from kcomp.ir.ops.common import require_float, require_rank
from kcomp.ir.ops.recurrent_torch_masked import fused_masked
from kcomp.ir.ops.recurrent_torch import fused
from kcomp.ir.types import FLOAT_DTYPES, TensorSpec

# Activations usable inside a cell: every elementwise one, with its default attributes.
_CELL_ACTIVATIONS = {
    op.name: partial(op.reference, **{k: spec.default for k, spec in op.attrs.items()})
    for op in ACTIVATION_OPS
    if "elementwise" in op.traits
}
CELL_ACTIVATIONS = tuple(sorted(_CELL_ACTIVATIONS))


def cell_activation(name: str):
    """The torch function of a cell activation (one of CELL_ACTIVATIONS, its attributes the defaults)."""
    return _CELL_ACTIVATIONS[name]


def split_inputs(inputs, use_bias: bool, masked: bool, dropout_masks: bool = False) -> tuple:
    """(x, kernel, recurrent, (bias,) or (), mask or None, (input masks, recurrent masks) or None)
    from an op's inputs: x, kernel, recurrent, [bias], [the two dropout masks], [the step mask]."""
    bias = tuple(inputs[3:4]) if use_bias else ()
    at = 3 + int(use_bias)
    dropout = tuple(inputs[at:at + 2]) if dropout_masks else None
    at += 2 * int(dropout_masks)
    return inputs[0], inputs[1], inputs[2], bias, (inputs[at] if masked else None), dropout


def _check_mask(x, mask) -> None:
    if mask.shape != x.shape[:2] or mask.dtype not in (*FLOAT_DTYPES, "bool"):
        raise ShapeError(
            f"recurrent layer: the mask {format_shape(mask.shape)} ({mask.dtype}) should be one float or bool "
            f"per sample and time step of the input {format_shape(x.shape)}: {format_shape(x.shape[:2])}."
        )


def _check_dropout_masks(x, units: int, gates: int, masks) -> None:
    want = ((x.shape[0], gates, x.shape[2]), (x.shape[0], gates, units))
    for name, mask, shape in zip(("input", "recurrent"), masks, want, strict=True):
        if mask.shape != shape or mask.dtype != x.dtype:
            raise ShapeError(
                f"recurrent layer: the {name} dropout masks {format_shape(mask.shape)} ({mask.dtype}) should be "
                f"(batch, gates, {'features' if name == 'input' else 'units'}) = {format_shape(shape)} ({x.dtype})."
            )


def _recurrent_infer(gates, num_states, bias_shape):
    def infer(inputs, activation, recurrent_activation, use_bias, return_sequences, go_backwards, masked=False,
              zero_output_for_mask=False, dropout_masks=False, **extra):
        x, kernel, recurrent = inputs[:3]
        require_float(x, "recurrent layer")
        require_rank(x, 3, "recurrent layer (input batch, timesteps, features)")
        units = recurrent.shape[0]
        want_kernel = (x.shape[2], gates * units)
        if kernel.shape != want_kernel or recurrent.shape != (units, gates * units):
            raise ShapeError(
                f"recurrent layer: kernel {format_shape(kernel.shape)} / recurrent kernel "
                f"{format_shape(recurrent.shape)} do not fit input {format_shape(x.shape)}; expected "
                f"{format_shape(want_kernel)} and {format_shape((units, gates * units))}."
            )
        want_inputs = 3 + int(use_bias) + 2 * int(dropout_masks) + int(masked)
        if len(inputs) != want_inputs:
            raise ShapeError(
                f"recurrent layer with use_bias={use_bias}, dropout_masks={dropout_masks}, masked={masked} takes "
                f"{want_inputs} inputs, received {len(inputs)}."
            )
        if masked:
            _check_mask(x, inputs[-1])
        if dropout_masks:
            _check_dropout_masks(x, units, gates, inputs[3 + int(use_bias):5 + int(use_bias)])
        if use_bias:
            want_bias = bias_shape(units, extra)
            if inputs[3].shape != want_bias:
                raise ShapeError(f"recurrent layer: bias {format_shape(inputs[3].shape)} should be {format_shape(want_bias)}.")
        n, t = x.shape[0], x.shape[1]
        out = (n, t, units) if return_sequences else (n, units)
        state = TensorSpec((n, units), x.dtype)
        return [TensorSpec(out, x.dtype)] + [state] * num_states

    return infer


def _run(x, go_backwards, return_sequences, step, states, mask=None, zero_output_for_mask=False):
    """Drive `step(x_t, states) -> states` over time; h is states[0]. With a mask, Keras's
    backend.rnn: where a step is masked the states stay and the output repeats the last one
    (zeros with zero_output_for_mask); the last output is the last step's output."""
    # unbind, not x[:, t]: autograd then gathers the time steps' gradients in one stack, where a
    # select per step made a full-size gradient per step (O(T^2) work: 9.3 s of backward for
    # batch 32, 500 steps, 32 units on this CPU).
    frames = x.unbind(1)
    keep = (None,) * len(frames) if mask is None else (mask != 0).unsqueeze(-1).unbind(1)
    steps = zip(frames, keep)
    outputs, output = [], torch.zeros_like(states[0])
    for x_t, keep_t in reversed(list(steps)) if go_backwards else steps:
        new = step(x_t, states)
        if keep_t is None:
            states, output = new, new[0]
        else:
            output = torch.where(keep_t, new[0], torch.zeros_like(output) if zero_output_for_mask else output)
            states = tuple(torch.where(keep_t, n, s) for n, s in zip(new, states))
        outputs.append(output)
    seq = torch.stack(outputs, dim=1) if return_sequences else output
    return (seq, *states)


class _GateDropout:
    """Keras's cells with recurrent_dropout: each gate g reads the inputs times its own input mask
    and h_{t-1} times its own recurrent mask, (batch, gates, width) tensors drawn once per sequence
    (the same at every step); without masks every gate reads them as they are."""

    def __init__(self, masks):
        self.inputs, self.recurrent = masks if masks is not None else (None, None)

    def project(self, x, kernel):
        """x @ kernel, each gate's columns from its own masked copy of x: (batch, time, gates * units)."""
        if self.inputs is None:
            return x @ kernel
        n, t, _ = x.shape
        gates = self.inputs.shape[1]
        per_gate = x.unsqueeze(1) * self.inputs.unsqueeze(2)  # (batch, gates, time, features)
        w = kernel.reshape(kernel.shape[0], gates, -1).transpose(0, 1)  # (gates, features, units)
        return (per_gate @ w).permute(0, 2, 1, 3).reshape(n, t, -1)

    def h(self, h, gate: int):
        """h_{t-1} as gate `gate` reads it."""
        return h if self.recurrent is None else h * self.recurrent[:, gate]

    def times(self, h, recurrent, gates: range):
        """Each of `gates` reads its masked h times its columns of the recurrent kernel, side by side."""
        units = recurrent.shape[0]
        if self.recurrent is None:
            return h @ recurrent[:, gates.start * units: gates.stop * units]
        return torch.cat([self.h(h, g) @ recurrent[:, g * units:(g + 1) * units] for g in gates], dim=-1)


def _lstm(x, kernel, recurrent, *bias, activation, recurrent_activation, use_bias, return_sequences, go_backwards,
          mask=None, zero_output_for_mask=False, dropout=None):
    act, ract = _CELL_ACTIVATIONS[activation], _CELL_ACTIVATIONS[recurrent_activation]
    units = recurrent.shape[0]
    drop = _GateDropout(dropout)
    xw = drop.project(x, kernel) + (bias[0] if use_bias else 0)

    def step(xw_t, states):
        h, c = states
        i, f, g, o = torch.split(xw_t + drop.times(h, recurrent, range(4)), units, dim=-1)
        c = ract(f) * c + ract(i) * act(g)
        return ract(o) * act(c), c

    zeros = x.new_zeros(x.shape[0], units)
    return _run(xw, go_backwards, return_sequences, step, (zeros, zeros), mask, zero_output_for_mask)


def _gru(x, kernel, recurrent, *bias, activation, recurrent_activation, use_bias, return_sequences, go_backwards, reset_after,
         mask=None, zero_output_for_mask=False, dropout=None):
    act, ract = _CELL_ACTIVATIONS[activation], _CELL_ACTIVATIONS[recurrent_activation]
    units = recurrent.shape[0]
    if use_bias and reset_after:
        input_bias, recurrent_bias = bias[0][0], bias[0][1]
    else:
        input_bias, recurrent_bias = (bias[0] if use_bias else 0), 0
    drop = _GateDropout(dropout)
    xw = drop.project(x, kernel) + input_bias
    u_h = recurrent[:, 2 * units :]

    def step(xw_t, states):
        (h,) = states
        x_z, x_r, x_h = torch.split(xw_t, units, dim=-1)
        if reset_after:
            h_z, h_r, h_h = torch.split(drop.times(h, recurrent, range(3)) + recurrent_bias, units, dim=-1)
            candidate = act(x_h + ract(x_r + h_r) * h_h)
        else:
            h_z, h_r = torch.split(drop.times(h, recurrent, range(2)), units, dim=-1)
            candidate = act(x_h + (ract(x_r + h_r) * drop.h(h, 2)) @ u_h)
        z = ract(x_z + h_z)
        return (z * h + (1 - z) * candidate,)

    return _run(xw, go_backwards, return_sequences, step, (x.new_zeros(x.shape[0], units),), mask, zero_output_for_mask)


def _simple_rnn(x, kernel, recurrent, *bias, activation, recurrent_activation, use_bias, return_sequences, go_backwards,
                mask=None, zero_output_for_mask=False, dropout=None):
    act = _CELL_ACTIVATIONS[activation]
    drop = _GateDropout(dropout)
    xw = drop.project(x, kernel) + (bias[0] if use_bias else 0)

    def step(xw_t, states):
        return (act(xw_t + drop.times(states[0], recurrent, range(1))),)

    zeros = x.new_zeros(x.shape[0], recurrent.shape[0])
    return _run(xw, go_backwards, return_sequences, step, (zeros,), mask, zero_output_for_mask)


def forward(cell: str):
    """The op's whole forward: run(x, kernel, recurrent, *bias, mask=None, dropout=None, **attrs), on
    PyTorch's fused kernels where they match Keras's cell, no dropout masks are given (they take
    one input for all gates) and a step mask, if any, reads one run of steps per row."""
    general = {"lstm": _lstm, "gru": _gru, "simple_rnn": _simple_rnn}[cell]

    def run(x, kernel, recurrent, *bias, mask=None, dropout=None, masked=False, dropout_masks=False,
            zero_output_for_mask=False, **attrs):
        if dropout is None:
            b = bias[0] if bias else None
            outputs = fused(cell, x, kernel, recurrent, b, **attrs) if mask is None else \
                fused_masked(cell, x, kernel, recurrent, b, mask, zero_output_for_mask, **attrs)
            if outputs is not None:
                return outputs
        return general(x, kernel, recurrent, *bias, mask=mask, dropout=dropout, zero_output_for_mask=zero_output_for_mask,
                       **attrs)

    return run


def _reference(cell: str):
    run = forward(cell)

    def reference(*inputs, use_bias, masked, dropout_masks, **attrs):
        x, kernel, recurrent, bias, mask, dropout = split_inputs(inputs, use_bias, masked, dropout_masks)
        if not saved_forwards.wants_tape(cell):
            return run(x, kernel, recurrent, *bias, mask=mask, dropout=dropout, use_bias=use_bias, **attrs)
        # Recorded with a bias leaf even without a bias (a zero one: the same outputs), since the
        # backward op returns the gradient at a zero bias then. The masks are no leaves: they have no gradient.
        units = recurrent.shape[0]
        full = (x, kernel, recurrent, *(bias or (x.new_zeros(bias_shape(cell, units, attrs)),)))
        leaves = tuple(t.detach().requires_grad_(True) for t in full)
        outputs = run(*leaves, mask=mask, dropout=dropout, use_bias=True, **attrs)
        saved_forwards.save_tape(cell, inputs, {"use_bias": use_bias, "masked": masked, "dropout_masks": dropout_masks,
                                                **attrs}, leaves, outputs)
        return tuple(o.detach() for o in outputs)

    return reference


def bias_shape(cell: str, units: int, attrs: dict) -> tuple:
    """Keras's bias shape: gates * units, or (2, 3 * units) for a GRU with reset_after=True."""
    if cell == "gru":
        return (2, 3 * units) if attrs["reset_after"] else (3 * units,)
    return ({"lstm": 4, "simple_rnn": 1}[cell] * units,)


def _recurrent_vjp(b, node, grads):
    """One coarse backward node (lstm_grad, gru_grad, simple_rnn_grad in conv_grad.py) takes the
    gradients of the outputs that received any and returns those of x, kernel, recurrent kernel, bias
    (a mask gets none: it is data, not a weight)."""
    present = tuple(i for i, g in enumerate(grads) if g is not None)
    dx, dkernel, drecurrent, dbias = b.emit(
        f"{node.op}_grad", [*node.inputs, *(grads[i] for i in present)], grad_outputs=present, **node.attrs
    )
    a = node.attrs
    return [dx, dkernel, drecurrent] + ([dbias] if a["use_bias"] else []) + [None] * (2 * a["dropout_masks"] + a["masked"])


COMMON_ATTRS = {
    "activation": attr(str, "tanh", CELL_ACTIVATIONS),
    "recurrent_activation": attr(str, "sigmoid", CELL_ACTIVATIONS),
    "use_bias": attr(bool, True),
    "return_sequences": attr(bool, False),
    "go_backwards": attr(bool, False),
    "masked": attr(bool, False, doc="a (batch, time) mask follows the weights"),
    "zero_output_for_mask": attr(bool, False, doc="a masked step outputs zeros, not the last output"),
    "dropout_masks": attr(bool, False, doc="input (batch, gates, features) and recurrent (batch, gates, units) "
                          "dropout masks follow the bias: each gate reads its own masked inputs and h (recurrent_dropout)"),
}

OPS = [
    OpDef(
        name="lstm",
        doc="Long short-term memory over a whole sequence; outputs (sequence or last h, h, c).",
        num_inputs=(3, 7),
        attrs=COMMON_ATTRS,
        infer=_recurrent_infer(4, 2, lambda units, extra: bias_shape("lstm", units, extra)),
        reference=_reference("lstm"),
        vjp=_recurrent_vjp,
        traits={"recurrent"},
        num_outputs=3,
    ),
    OpDef(
        name="gru",
        doc="Gated recurrent unit over a whole sequence; outputs (sequence or last h, h). "
        "reset_after=True (Keras's default) applies the reset gate after the recurrent matmul "
        "and takes a (2, 3*units) bias.",
        num_inputs=(3, 7),
        attrs={**COMMON_ATTRS, "reset_after": attr(bool, True)},
        infer=_recurrent_infer(3, 1, lambda units, extra: bias_shape("gru", units, extra)),
        reference=_reference("gru"),
        vjp=_recurrent_vjp,
        traits={"recurrent"},
        num_outputs=2,
    ),
    OpDef(
        name="simple_rnn",
        doc="Fully-connected recurrence h = activation(x W + h U + b); outputs (sequence or last h, h). "
        "recurrent_activation is unused.",
        num_inputs=(3, 7),
        attrs=COMMON_ATTRS,
        infer=_recurrent_infer(1, 1, lambda units, extra: bias_shape("simple_rnn", units, extra)),
        reference=_reference("simple_rnn"),
        vjp=_recurrent_vjp,
        traits={"recurrent"},
        num_outputs=2,
    ),
]
