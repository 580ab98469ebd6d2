"""decompose, recurrent layers: a gru and a simple_rnn (and their backward ops) into matmuls and one
recurrence op each, the same way round as an lstm (decompose_recurrent.py, whose helpers these rules share).

A gru and a simple_rnn (and their backward ops) decompose the same way round into gru_scan /
simple_rnn_scan and their gradients (kcomp/ir/ops/recurrent_scan_gru.py, recurrent_scan_simple_rnn.py):
the GRU with any activations and either reset_after (with reset_after its (2, 3 * units)
bias is Keras's two rows: the input projection's, and the recurrent one the scan adds inside
the reset gate's product), SimpleRNN with any activation (where its derivative needs its input,
scan_activations.saves_pre, the forward scan also saves every step's pre-activation for the
backward: save=True where the graph holds it); float32, static time, up to their
kernels' units limits (the GRU's: GRU_SCAN_TILED_MAX_UNITS, on chip up to GRU_SCAN_MAX_UNITS and
tiled above, as the LSTM's), and exactly the inputs the scans read. A masked gru (any size the
GRU kernels take) passes its mask to both scans as the LSTM's does (flipped with go_backwards;
zero_output_for_mask its zeros_where_masked), with its dropout masks or without.

A simple_rnn decomposes up to SCAN_TILED_MAX_UNITS units (the on-chip kernels take up to
SIMPLE_RNN_SCAN_MAX_UNITS, the tiled ones, kernels/recurrent_tiled_simple_rnn.py, the rest), with
its mask or without, at every size: the mask reaches both scans as a masked lstm's does, and its
dropout masks (one gate's) as an lstm's.
"""

from kcomp.ir.graph import Node
from kcomp.ir.ops.linalg import _dense_kernel_grad
from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS
from kcomp.ir.ops.recurrent_scan_gru import GRU_SCAN_TILED_MAX_UNITS
from kcomp.ir.ops.scan_activations import saves_pre
from kcomp.ir.types import is_static
from kcomp.passes.decompose_recurrent import (
    _activations, _dropout_masks, _gate_input_grads, _gate_projection, _gate_weight_grad, _gates_first,
    _has_backward, _input_grads, _last_step, _mask_at, _mask_scannable, _per_gate, _present,
    _projected_grads, _projection, _read_mask, _state_grads, _step_before, _zero_masked,
)
from kcomp.passes.rewrite import Rewriter


def _exact_inputs(node: Node) -> bool:
    """Whether the node has exactly the inputs the scans read (x, kernel, recurrent, the bias, the
    dropout masks, the mask, the gradients): one given more stays whole."""
    a = node.attrs
    return len(node.inputs) == _mask_at(node) + int(a["masked"]) + len(a.get("grad_outputs", ()))


def _gru_scannable(node: Node) -> bool:
    """What gru_scan computes (not _scannable, whose size limits are the LSTM kernels'): any
    activations, float32, static time, a mask of x's dtype where masked, dropout masks or not, up to
    GRU_SCAN_TILED_MAX_UNITS units (on chip or tiled: the fusion pass picks)."""
    x = node.inputs[0]
    return x.dtype == "float32" and is_static(x.shape[1]) and _mask_scannable(node) and _exact_inputs(node) \
        and node.inputs[2].shape[0] <= GRU_SCAN_TILED_MAX_UNITS


def _simple_rnn_scannable(node: Node) -> bool:
    x = node.inputs[0]
    return _mask_scannable(node) and x.dtype == "float32" and is_static(x.shape[1]) and _exact_inputs(node) \
        and node.inputs[2].shape[0] <= SCAN_TILED_MAX_UNITS


def _last_outputs(rw: Rewriter, node: Node, h_seq) -> list:
    """A gru's or simple_rnn's outputs from every h_t: the sequence or the last h, then the last h."""
    h_last = _last_step(rw, h_seq, node.outputs[1])
    return [h_seq if node.attrs["return_sequences"] else h_last, h_last]


def _gru_scan(rw: Rewriter, node: Node, save: bool, mask: list):
    """(x as read, x per gate or None, h_seq, what the scan saved or None): the projection with
    Keras's input bias (with dropout masks, each gate's own masked x: _gate_projection) and
    gru_scan with its recurrent bias (reset_after: the bias's rows), the mask as read and the
    recurrent dropout masks."""
    a = node.attrs
    input_bias, recurrent_bias = None, []
    if a["use_bias"] and a["reset_after"]:
        bias = node.inputs[3]
        input_bias, row = (rw.emit1("reshape", [rw.emit1("slice", [bias], axis=0, start=i, stop=i + 1)],
                                    shape=bias.shape[1:]) for i in (0, 1))
        recurrent_bias = [row]
    x_read, x_gates, xw = _gate_projection(rw, node, 3, input_bias)
    recurrent_masks = _dropout_masks(node)[1:]
    outs = rw.emit("gru_scan", [xw, node.inputs[2], *recurrent_bias, *mask, *recurrent_masks],
                   reset_after=a["reset_after"], save=save, masked=bool(mask), recurrent_masks=bool(recurrent_masks),
                   **_activations(node))
    return x_read, x_gates, outs[0], outs[1] if save else None


def gru_to_scan(node: Node, rw: Rewriter):
    if not _gru_scannable(node):
        return None
    mask = _read_mask(rw, node)
    _, _, h_seq, _ = _gru_scan(rw, node, _has_backward(node, rw), mask)
    out, h_last = _last_outputs(rw, node, h_seq)
    return [_zero_masked(rw, node, mask, out), h_last]


def gru_grad_to_scan(node: Node, rw: Rewriter):
    if not _gru_scannable(node):
        return None
    recurrent = node.inputs[2]
    units, reset_after = recurrent.shape[0], node.attrs["reset_after"]
    mask = _read_mask(rw, node)
    x_read, x_gates, h_seq, saved = _gru_scan(rw, node, True, mask)  # the forward's, once CSE has run
    d_seq, d_h, _ = _state_grads(rw, node, mask)
    present, flags = _present(d_seq, d_h)
    recurrent_masks = _dropout_masks(node)[1:]
    outs = rw.emit("gru_scan_grad", [recurrent, h_seq, saved, *mask, *recurrent_masks, *present],
                   reset_after=reset_after, masked=bool(mask), recurrent_masks=bool(recurrent_masks), **flags,
                   **_activations(node))
    if recurrent_masks:
        return _gru_dropout_grads(rw, node, x_gates, h_seq, saved, outs)
    dx, d_kernel, d_bias = _input_grads(rw, node, x_read, outs[0])
    h_prev = _step_before(rw, h_seq)
    if reset_after:  # h_prev @ U + b is one product: its gradient gives d U and the recurrent bias's
        return [dx, d_kernel, _dense_kernel_grad(rw, h_prev, outs[1]), _gru_bias_grad(rw, d_bias, outs)]
    # Without reset_after, U's h block multiplies r * h_prev, its z and r blocks h_prev.
    reset_h = rw.emit1("mul", [_reset_gate(rw, node, saved, units), h_prev])
    d_recurrent = rw.emit1("concat", [_dense_kernel_grad(rw, h_prev, _blocks(rw, outs[0], units, 0, 2)),
                                      _dense_kernel_grad(rw, reset_h, _blocks(rw, outs[0], units, 2, 3))], axis=1)
    return [dx, d_kernel, d_recurrent, d_bias]


def _gru_dropout_grads(rw: Rewriter, node: Node, x_gates, h_seq, saved, outs) -> list:
    """gru_grad's outputs with dropout masks: d x and d kernel through the input masks
    (_gate_input_grads); d recurrent_g = v_g^T dp_g per gate, v_g what gate g's recurrent product
    read and dp_g its gradient: with reset_after h_prev * m_g and the scan's second output (the
    recurrent bias's gradient its sum), else h_prev * m_g for z and r, r * h_prev * m_h for the
    candidate (Keras's GRUCell masks h before the reset gate), with dxw's blocks."""
    units, reset_after = node.inputs[2].shape[0], node.attrs["reset_after"]
    dxw_gates = _gates_first(rw, outs[0], 3)
    h_gates = _per_gate(rw, _step_before(rw, h_seq), _dropout_masks(node)[1])  # (batch, 3, time, units)
    if reset_after:
        d_recurrent = _gate_weight_grad(rw, h_gates, _gates_first(rw, outs[1], 3))
    else:
        n, _, steps, _ = h_gates.shape
        r = rw.emit1("reshape", [_reset_gate(rw, node, saved, units)], shape=(n, 1, steps, units))
        reset_h = rw.emit1("mul", [rw.emit1("slice", [h_gates], axis=1, start=2, stop=3), r])
        v_gates = rw.emit1("concat", [rw.emit1("slice", [h_gates], axis=1, start=0, stop=2), reset_h], axis=1)
        d_recurrent = _gate_weight_grad(rw, v_gates, dxw_gates)
    d_bias = _gru_bias_grad(rw, rw.emit1("sum", [outs[0]], axes=(0, 1), keepdims=False), outs)
    return [*_gate_input_grads(rw, node, x_gates, dxw_gates), d_recurrent, d_bias]


def _reset_gate(rw: Rewriter, node: Node, saved, units: int):
    """The reset gate r of every step from gru_scan's saved blocks: the saved block, or its
    activation where the scan saves pre-activations (a non-default activation)."""
    r = _blocks(rw, saved, units, 1, 2)
    if saves_pre(*_activations(node).values()):
        r = rw.emit1(node.attrs["recurrent_activation"], [r])
    return r


def _gru_bias_grad(rw: Rewriter, d_input_bias, outs):
    """gru_grad's d bias (also at a zero bias) from the input projection's: with reset_after
    (gru_scan_grad's two outputs) Keras's two rows, the second the recurrent product's, the sum of
    its gradient."""
    if len(outs) == 1:
        return d_input_bias
    rows = [rw.emit1("reshape", [d], shape=(1, d.shape[0]))
            for d in (d_input_bias, rw.emit1("sum", [outs[1]], axes=(0, 1), keepdims=False))]
    return rw.emit1("concat", rows, axis=0)


def _blocks(rw: Rewriter, v, units: int, start: int, stop: int):
    """Gate blocks start to stop (each `units` wide) of v's last axis."""
    return rw.emit1("slice", [v], axis=2, start=start * units, stop=stop * units)


def _simple_rnn_scan(rw: Rewriter, node: Node, mask: list, backward: bool):
    """(x as read, times its input dropout mask where given; [every h_t] and, where the backward reads
    them, [every step's pre-activation]): the projection and simple_rnn_scan with the mask as read
    and the recurrent dropout mask; backward: whether the graph holds the backward, which reads the
    pre-activations where the activation's derivative needs its input (saves_pre). One gate: its
    masks (batch, 1, width) broadcast over time, x * mask is a plain operand of the matmul template
    (no batched matmul over gates as _gate_projection's)."""
    input_mask, *recurrent_masks = _dropout_masks(node) or [None]
    x_read, xw = _projection(rw, node, input_mask=input_mask)
    activation = node.attrs["activation"]
    outs = rw.emit("simple_rnn_scan", [xw, node.inputs[2], *mask, *recurrent_masks], activation=activation,
                   masked=bool(mask), recurrent_masks=bool(recurrent_masks), save=backward and saves_pre(activation))
    return x_read, list(outs)


def simple_rnn_to_scan(node: Node, rw: Rewriter):
    if not _simple_rnn_scannable(node):
        return None
    mask = _read_mask(rw, node)
    _, (h_seq, *_) = _simple_rnn_scan(rw, node, mask, _has_backward(node, rw))
    out, h_last = _last_outputs(rw, node, h_seq)
    return [_zero_masked(rw, node, mask, out), h_last]


def simple_rnn_grad_to_scan(node: Node, rw: Rewriter):
    if not _simple_rnn_scannable(node):
        return None
    mask = _read_mask(rw, node)
    x_read, (h_seq, *pre) = _simple_rnn_scan(rw, node, mask, backward=True)  # the forward's, once CSE has run
    d_seq, d_h, _ = _state_grads(rw, node, mask)
    present, flags = _present(d_seq, d_h)
    recurrent_masks = _dropout_masks(node)[1:]
    dz = rw.emit1("simple_rnn_scan_grad", [node.inputs[2], h_seq, *pre, *mask, *recurrent_masks, *present],
                  activation=node.attrs["activation"], masked=bool(mask), recurrent_masks=bool(recurrent_masks),
                  **flags)
    return _projected_grads(rw, node, x_read, dz, h_seq, _dropout_masks(node))


RULES = [("gru", gru_to_scan), ("gru_grad", gru_grad_to_scan),
         ("simple_rnn", simple_rnn_to_scan), ("simple_rnn_grad", simple_rnn_grad_to_scan)]
