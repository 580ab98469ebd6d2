"""decompose, recurrent layers: an lstm (and its lstm_grad) into matmuls and one recurrence op.

    xw = x @ kernel + bias                 every time step's input projection: one matmul
    h_seq, ... = lstm_scan(xw, recurrent)  the time steps, one kernel launch

and the backward the same way round: lstm_scan_grad gives the gradient dz of every step's
gates, then d x = dz @ kernel^T, d kernel = x^T dz, d recurrent = h_prev^T dz (h_prev: the
h sequence one step late, zeros first) and d bias = the sum of dz over batch and time: matmuls
and a reduction the other templates compute. The backward's projection and scan are the
forward's own nodes again, which CSE (simplify, after decompose) merges: the forward saves
every c_t and its gates (save=True) when the graph also holds the backward.

Only what lstm_scan computes is decomposed: any cell activations (the scans take both as
attributes, kcomp/ir/ops/scan_activations.py), float32, up to SCAN_TILED_MAX_UNITS units (the on-chip kernels take up to SCAN_MAX_UNITS, the
tiled ones the rest: the fusion pass picks), and a time axis of static length (slicing the last
step needs it). Anything else stays one coarse op, run by its torch reference.

With recurrent_dropout in training (dropout_masks: an input mask and a recurrent mask per gate,
drawn once per sequence, kcomp/ir/ops/recurrent.py's _GateDropout) gate g projects x *
input_masks[:, g]: one batched matmul over the gates, (batch, gates, time, features) @ (gates,
features, units) (_gate_projection says why not a matmul per gate), and the scans take the
recurrent masks (recurrent_masks=True), each gate's h_{t-1} times its mask. Backwards every
gradient goes through the gate's masks: d x = sum over g of (dz_g @ kernel_g^T) * input_masks[:, g],
d kernel_g = (x * input_masks[:, g])^T dz_g, d recurrent_g = (h_prev * recurrent_masks[:, g])^T dz_g.
A GRU's dropout masks decompose the same way (_gate_projection with 3 gates, gru_scan's
recurrent_masks; its recurrent products read h_prev * m_g, without reset_after the candidate's
r * h_prev * m_h: _gru_dropout_grads); a SimpleRNN's one gate needs no batched matmul: x times
its input mask is the plain projection's operand (_simple_rnn_scan), and backwards d x and
h_prev are times the masks (_projected_grads).

A masked lstm (its float mask; on chip or tiled) passes the mask to both scans,
flipped with the sequence for go_backwards as the coarse op reads it. The scans carry the states
through a masked step, so the h sequence's last step is the final h either way; where a masked
step outputs zeros (zero_output_for_mask) the pass zeroes the output, and its gradient, there
(zeros_where_masked: Keras's where, 0 even where the carried state is NaN).

A gru and a simple_rnn decompose the same way round: decompose_recurrent_gru.py.
"""

from kcomp.ir.graph import Node
from kcomp.ir.ops.linalg import _dense_kernel_grad
from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS
from kcomp.ir.types import is_static
from kcomp.passes.rewrite import Rewriter


def _scannable(node: Node, dropout: bool = False) -> bool:
    """dropout: whether the caller decomposes per-gate dropout masks (recurrent_dropout in
    training; the LSTM's scans take them), else a node with them stays whole."""
    x = node.inputs[0]
    a = node.attrs
    if a["dropout_masks"] and not dropout:
        return False
    if not _mask_scannable(node):
        return False
    return x.dtype == "float32" and is_static(x.shape[1]) and node.inputs[2].shape[0] <= SCAN_TILED_MAX_UNITS


def _activations(node: Node) -> dict:
    """The node's activation and recurrent_activation, which its scans take (any cell activation)."""
    return {k: node.attrs[k] for k in ("activation", "recurrent_activation")}


def _mask_scannable(node: Node) -> bool:
    """No mask, or one the scans read: 0/1 floats of x's dtype, as the layers make them."""
    return not node.attrs["masked"] or node.inputs[_mask_at(node)].dtype == node.inputs[0].dtype


def _mask_at(node: Node) -> int:
    """Where the step mask stands among the node's inputs: after the weights and the dropout masks."""
    a = node.attrs
    return 3 + int(a["use_bias"]) + 2 * int(a["dropout_masks"])


def _read_mask(rw: Rewriter, node: Node) -> list:
    """[the node's mask in the order the recurrence reads the steps (flipped with go_backwards, as
    the coarse op reads it)], or [] without one: the scans' optional last input."""
    if not node.attrs["masked"]:
        return []
    mask = node.inputs[_mask_at(node)]
    return [rw.emit1("flip", [mask], axis=1) if node.attrs["go_backwards"] else mask]


def _zero_masked(rw: Rewriter, node: Node, mask: list, v):
    """v (an h sequence or a last h, or its gradient) zero at the masked steps where a masked step
    outputs zeros (zero_output_for_mask): the scans carry the state through every step, the coarse
    op's output sequence is zero at the masked ones (and its last output, if the last step is
    masked), as Keras's where makes it, also where the carried state is NaN or inf."""
    if not mask or not node.attrs["zero_output_for_mask"]:
        return v
    m, steps = mask[0], mask[0].shape[1]
    if len(v.shape) == 2:
        m = rw.emit1("slice", [m], axis=1, start=steps - 1, stop=steps)
    else:
        m = rw.emit1("reshape", [m], shape=(*m.shape, 1))
    return rw.emit1("zeros_where_masked", [v, m])


def _forward_inputs(node: Node) -> tuple:
    return node.inputs[: 3 + int(node.attrs["use_bias"])]


def _projection(rw: Rewriter, node: Node, input_bias=None, input_mask=None):
    """(x in the order the recurrence reads it, xw = x @ kernel + bias); input_bias: the bias where
    it is not the node's bias input itself (a GRU's first row with reset_after); input_mask: a
    one-gate cell's input dropout mask (batch, 1, features), x times it (broadcast over time)."""
    x, kernel, recurrent, *bias = _forward_inputs(node)
    bias = [input_bias] if input_bias is not None else bias
    if node.attrs["go_backwards"]:
        x = rw.emit1("flip", [x], axis=1)
    if input_mask is not None:
        x = rw.emit1("mul", [x, input_mask])
    xw = rw.emit1("matmul", [x, kernel])
    if bias:
        xw = rw.emit1("bias_add", [xw, bias[0]])
    return x, xw


def _has_backward(node: Node, rw: Rewriter) -> bool:
    """Whether the graph holds the node's backward op (its forward inputs and attributes). Asked of
    the node as the sweep found it: the backward reads the inputs as they were before this sweep
    rewrote them (a stacked layer's x, the output of a layer below decomposed in the same sweep)."""
    (original,) = [n for n in rw.graph.nodes if n.outputs[:1] == node.outputs[:1]]
    inputs = [v.id for v in original.inputs]
    forward_attrs = dict(node.attrs)
    return any(user.op == f"{node.op}_grad" and [v.id for v in user.inputs[:len(inputs)]] == inputs  # and the mask
               and {k: v for k, v in user.attrs.items() if k != "grad_outputs"} == forward_attrs
               for user in rw.users.get(inputs[0], []))


def _last_step(rw: Rewriter, seq, like):
    """seq[:, -1] with the shape of `like` (batch, units)."""
    steps = seq.shape[1]
    return rw.emit1("reshape", [rw.emit1("slice", [seq], axis=1, start=steps - 1, stop=steps)], shape=like.shape)


# --- LSTM -----------------------------------------------------------------------------------------


def _dropout_masks(node: Node) -> list:
    """[input masks (batch, gates, features), recurrent masks (batch, gates, units)], or []."""
    at = 3 + int(node.attrs["use_bias"])
    return list(node.inputs[at:at + 2]) if node.attrs["dropout_masks"] else []


def _per_gate(rw: Rewriter, v, masks):
    """v (batch, time, width) times each gate's mask (batch, gates, width): (batch, gates, time, width)."""
    n, steps, width = v.shape
    return rw.emit1("mul", [rw.emit1("reshape", [v], shape=(n, 1, steps, width)),
                            rw.emit1("reshape", [masks], shape=(n, masks.shape[1], 1, width))])


def _gate_weights(rw: Rewriter, w, gates: int):
    """A kernel (width, gates * units) as one (width, units) matrix per gate: (gates, width, units)."""
    return rw.emit1("transpose", [rw.emit1("reshape", [w], shape=(w.shape[0], gates, w.shape[1] // gates))],
                    perm=(1, 0, 2))


def _gates_last(rw: Rewriter, v):
    """(batch, gates, time, units) -> (batch, time, gates * units)."""
    n, gates, steps, units = v.shape
    return rw.emit1("reshape", [rw.emit1("transpose", [v], perm=(0, 2, 1, 3))], shape=(n, steps, gates * units))


def _gates_first(rw: Rewriter, v, gates: int):
    """(batch, time, gates * units) -> (batch, gates, time, units)."""
    n, steps, width = v.shape
    return rw.emit1("transpose", [rw.emit1("reshape", [v], shape=(n, steps, gates, width // gates))],
                    perm=(0, 2, 1, 3))


def _gate_projection(rw: Rewriter, node: Node, gates: int, input_bias=None):
    """(x as read, x times each gate's input mask or None, xw) of an LSTM or GRU (`gates` gates);
    input_bias as _projection's. With dropout masks gate g projects
    x * input_masks[:, g]: one batched matmul over the gates, (batch, gates, time, features) @
    (gates, features, units), not a matmul per gate: one product (the masked copies) and two
    layout changes around it whatever the gate count, where per-gate matmuls fused to 17 plan
    steps for the forward alone (measured: 4 matmul kernels, 4 products, 8 slices of the masks and
    the kernel, a concat). The batched matmuls (here, in _dropout_grads and _gru_dropout_grads) are
    matmul kernels (the template's BATCHED form, kernels/matmul.py: the kernel's per-gate view read
    through its strides, broadcast over the batch); the projection is one parallel product per
    layer, off the scans' sequential path. (Measured, an LSTM(6) training step's plan: 19 kernels,
    7 torch ops (a broadcast product of the masks, copying reshapes, a shift, a concat; no matmul)
    and 20 views with recurrent_dropout, where the batched matmuls on torch made it 16, 10 (3 of
    them matmuls) and 20; 14, 0 and 10 without. A GRU(6)'s, reset_after: 20, 8 and 28, from 17,
    11 (3) and 28; 15, 1 and 17 without.)"""
    if not node.attrs["dropout_masks"]:
        x, xw = _projection(rw, node, input_bias)
        return x, None, xw
    x, kernel, _, *bias = _forward_inputs(node)
    bias = [input_bias] if input_bias is not None else bias
    if node.attrs["go_backwards"]:
        x = rw.emit1("flip", [x], axis=1)
    x_gates = _per_gate(rw, x, _dropout_masks(node)[0])
    xw = _gates_last(rw, rw.emit1("matmul", [x_gates, _gate_weights(rw, kernel, gates)]))
    return x, x_gates, rw.emit1("bias_add", [xw, bias[0]]) if bias else xw


def _lstm_scan(rw: Rewriter, node: Node, save: bool):
    """(x as read, x per gate or None, every h_t and the scan's other outputs, the mask as read)."""
    x_read, x_gates, xw = _gate_projection(rw, node, 4)
    mask = _read_mask(rw, node)
    recurrent_masks = _dropout_masks(node)[1:]
    outs = rw.emit("lstm_scan", [xw, node.inputs[2], *mask, *recurrent_masks], save=save, masked=bool(mask),
                   recurrent_masks=bool(recurrent_masks), **_activations(node))
    return x_read, x_gates, outs, mask


def _gate_weight_grad(rw: Rewriter, v_gates, dz_gates):
    """d W (width, gates * units) of z_g = v_g @ W_g for every gate: v_g^T dz_g summed over batch and
    time, from v per gate (batch, gates, time, width) and dz per gate (batch, gates, time, units)."""
    per_row = rw.emit1("matmul", [rw.emit1("transpose", [v_gates], perm=(0, 1, 3, 2)), dz_gates])
    summed = rw.emit1("transpose", [rw.emit1("sum", [per_row], axes=(0,), keepdims=False)], perm=(1, 0, 2))
    width, gates, units = summed.shape
    return rw.emit1("reshape", [summed], shape=(width, gates * units))


def _gate_input_grads(rw: Rewriter, node: Node, x_gates, dxw_gates) -> list:
    """[d x, d kernel] where gate g projected x * input_masks[:, g] (x_gates) and dxw_gates is the
    gradient of every gate's projection (batch, gates, time, units): d x = sum over g of
    (dxw_g @ kernel_g^T) * input_masks[:, g], d kernel_g = (x * input_masks[:, g])^T dxw_g."""
    input_masks = _dropout_masks(node)[0]
    n, gates, features = input_masks.shape
    kernel_t = rw.emit1("transpose", [_gate_weights(rw, node.inputs[1], gates)], perm=(0, 2, 1))
    dx_gates = rw.emit1("mul", [rw.emit1("matmul", [dxw_gates, kernel_t]),
                                rw.emit1("reshape", [input_masks], shape=(n, gates, 1, features))])
    dx = rw.emit1("sum", [dx_gates], axes=(1,), keepdims=False)
    if node.attrs["go_backwards"]:
        dx = rw.emit1("flip", [dx], axis=1)
    return [dx, _gate_weight_grad(rw, x_gates, dxw_gates)]


def _dropout_grads(rw: Rewriter, node: Node, x_gates, dz, h_seq) -> list:
    """The grad op's outputs with dropout masks where z = xw + h_{t-1} @ recurrent per gate (the
    LSTM's): gate g read x * input_masks[:, g] and h_{t-1} * recurrent_masks[:, g],
    so d x and d kernel as _gate_input_grads, d recurrent_g = (h_prev * recurrent_masks[:, g])^T
    dz_g; d bias = sum of dz."""
    dz_gates = _gates_first(rw, dz, x_gates.shape[1])
    h_gates = _per_gate(rw, _step_before(rw, h_seq), _dropout_masks(node)[1])
    return [*_gate_input_grads(rw, node, x_gates, dz_gates), _gate_weight_grad(rw, h_gates, dz_gates),
            rw.emit1("sum", [dz], axes=(0, 1), keepdims=False)]


def lstm_to_scan(node: Node, rw: Rewriter):
    if not _scannable(node, dropout=True):
        return None
    save = _has_backward(node, rw)
    _, _, outs, mask = _lstm_scan(rw, node, save)
    h_seq = outs[0]
    h_last = _last_step(rw, h_seq, node.outputs[1])
    c_last = _last_step(rw, outs[1], node.outputs[2]) if save else outs[1]
    return [_zero_masked(rw, node, mask, h_seq if node.attrs["return_sequences"] else h_last), h_last, c_last]


def _state_grads(rw: Rewriter, node: Node, mask: list) -> tuple:
    """(d_seq, d_h, the grad op's gradient by output index): the gradients of every h_t and of the
    last h (the output's, without return_sequences, and the state's summed), None where absent;
    the output's zero where it is zeros (_zero_masked)."""
    a = node.attrs
    grads = dict(zip(a["grad_outputs"], node.inputs[_mask_at(node) + int(a["masked"]):]))
    d_out = None if grads.get(0) is None else _zero_masked(rw, node, mask, grads[0])
    d_seq = d_out if a["return_sequences"] else None
    d_h = [g for g in (None if a["return_sequences"] else d_out, grads.get(1)) if g is not None]
    d_h = d_h[0] if len(d_h) == 1 else (rw.emit1("add", d_h) if d_h else None)
    return d_seq, d_h, grads


def _present(d_seq, d_h) -> tuple[list, dict]:
    """A scan backward's gradient inputs and their flags."""
    return [g for g in (d_seq, d_h) if g is not None], dict(has_dseq=d_seq is not None, has_dh=d_h is not None)


def _step_before(rw: Rewriter, seq):
    """seq one step late, zeros first: the state each step starts from. A shift, which the matmul of
    d recurrent = h_prev^T dz reads as it loads A (kcomp/passes/fuse_gather.py): never written."""
    return rw.emit1("shift", [seq], axis=1, period=seq.shape[1], by=1)


def _input_grads(rw: Rewriter, node: Node, x_read, dxw) -> list:
    """[d x, d kernel, d input bias] from the gradient of every step's projection xw."""
    kernel_t = rw.emit1("transpose", [node.inputs[1]], perm=(1, 0))
    dx = rw.emit1("matmul", [dxw, kernel_t])
    if node.attrs["go_backwards"]:
        dx = rw.emit1("flip", [dx], axis=1)
    d_bias = rw.emit1("sum", [dxw], axes=(0, 1), keepdims=False)  # also the grad op's d bias at a zero bias
    return [dx, _dense_kernel_grad(rw, x_read, dxw), d_bias]


def _projected_grads(rw: Rewriter, node: Node, x_read, dz, h_seq, masks=()) -> list:
    """The grad op's outputs where the recurrence reads h_prev @ recurrent + xw, with dz the
    gradient of both: d x, d kernel, d recurrent = h_prev^T dz, d bias. masks: a one-gate cell's
    dropout masks (input, recurrent: (batch, 1, width), the same every step), where x_read is x
    times the input one: then d x is times it, and h_prev times the recurrent one."""
    dx, d_kernel, d_bias = _input_grads(rw, node, x_read, dz)
    h_prev = _step_before(rw, h_seq)
    if masks:
        dx, h_prev = (rw.emit1("mul", [v, m]) for v, m in zip((dx, h_prev), masks))
    return [dx, d_kernel, _dense_kernel_grad(rw, h_prev, dz), d_bias]


def lstm_grad_to_scan(node: Node, rw: Rewriter):
    if not _scannable(node, dropout=True):
        return None
    recurrent = node.inputs[2]
    x_read, x_gates, (h_seq, c_seq, gates), mask = _lstm_scan(rw, node, save=True)  # the forward's, once CSE has run
    d_seq, d_h, grads = _state_grads(rw, node, mask)
    d_c = grads.get(2)
    present = [g for g in (d_seq, d_h, d_c) if g is not None]
    recurrent_masks = _dropout_masks(node)[1:]
    dz = rw.emit1("lstm_scan_grad", [recurrent, c_seq, gates, *mask, *recurrent_masks, *present], masked=bool(mask),
                  recurrent_masks=bool(recurrent_masks), has_dseq=d_seq is not None, has_dh=d_h is not None,
                  has_dc=d_c is not None, **_activations(node))
    if recurrent_masks:
        return _dropout_grads(rw, node, x_gates, dz, h_seq)
    return _projected_grads(rw, node, x_read, dz, h_seq)


RULES = [("lstm", lstm_to_scan), ("lstm_grad", lstm_grad_to_scan)]
