"""decompose, recurrent layers: an lstm (and its lstm_grad) into matmuls and one recurrence op.

    xw = x @ kernel + bias                 every time step's input projection: one matmul
    h_seq, ... = lstm_scan(xw, recurrent)  the time steps, one kernel launch

and the backward the same way round: lstm_scan_grad gives the gradient dz of every step's
gates, then d x = dz @ kernel^T, d kernel = x^T dz, d recurrent = h_prev^T dz (h_prev: the
h sequence one step late, zeros first) and d bias = the sum of dz over batch and time: matmuls
and a reduction the other templates compute. The backward's projection and scan are the
forward's own nodes again, which CSE (simplify, after decompose) merges: the forward saves
every c_t and its gates (save=True) when the graph also holds the backward.

Only what lstm_scan computes is decomposed: Keras's default activations (tanh, sigmoid),
float32, up to SCAN_TILED_MAX_UNITS units (the on-chip kernels take up to SCAN_MAX_UNITS, the
tiled ones the rest: the fusion pass picks), and a time axis of static length (slicing the last
step needs it). Anything else
stays one coarse op, run by its torch reference.
"""

from kcomp.ir.graph import Node
from kcomp.ir.ops.linalg import _dense_kernel_grad
from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS
from kcomp.ir.types import is_static
from kcomp.passes.rewrite import Rewriter


def _scannable(node: Node) -> bool:
    x = node.inputs[0]
    a = node.attrs
    if a["masked"]:  # lstm_scan has no masked step: a masked lstm stays one coarse op
        return False
    return (a["activation"], a["recurrent_activation"]) == ("tanh", "sigmoid") and x.dtype == "float32" \
        and is_static(x.shape[1]) and node.inputs[2].shape[0] <= SCAN_TILED_MAX_UNITS


def _forward_inputs(node: Node) -> tuple:
    return node.inputs[: 3 + int(node.attrs["use_bias"])]


def _projection(rw: Rewriter, node: Node):
    """(x in the order the recurrence reads it, xw = x @ kernel + bias)."""
    x, kernel, recurrent, *bias = _forward_inputs(node)
    if node.attrs["go_backwards"]:
        x = rw.emit1("flip", [x], axis=1)
    xw = rw.emit1("matmul", [x, kernel])
    if bias:
        xw = rw.emit1("bias_add", [xw, bias[0]])
    return x, xw


def _has_backward(node: Node, rw: Rewriter) -> bool:
    inputs = [v.id for v in node.inputs]
    forward_attrs = dict(node.attrs)
    return any(user.op == "lstm_grad" and [v.id for v in _forward_inputs(user)] == inputs
               and {k: v for k, v in user.attrs.items() if k != "grad_outputs"} == forward_attrs
               for user in rw.users.get(node.inputs[0].id, []))


def _last_step(rw: Rewriter, seq, like):
    """seq[:, -1] with the shape of `like` (batch, units)."""
    steps = seq.shape[1]
    return rw.emit1("reshape", [rw.emit1("slice", [seq], axis=1, start=steps - 1, stop=steps)], shape=like.shape)


def lstm_to_scan(node: Node, rw: Rewriter):
    if not _scannable(node):
        return None
    _, xw = _projection(rw, node)
    recurrent = node.inputs[2]
    save = _has_backward(node, rw)
    outs = rw.emit("lstm_scan", [xw, recurrent], save=save)
    h_seq = outs[0]
    h_last = _last_step(rw, h_seq, node.outputs[1])
    c_last = _last_step(rw, outs[1], node.outputs[2]) if save else outs[1]
    return [h_seq if node.attrs["return_sequences"] else h_last, h_last, c_last]


def lstm_grad_to_scan(node: Node, rw: Rewriter):
    if not _scannable(node):
        return None
    a = node.attrs
    x, kernel, recurrent = node.inputs[:3]
    grads = dict(zip(a["grad_outputs"], node.inputs[3 + int(a["use_bias"]):]))
    x_read, xw = _projection(rw, node)
    h_seq, c_seq, gates = rw.emit("lstm_scan", [xw, recurrent], save=True)  # the forward's, once CSE has run
    d_seq = grads.get(0) if a["return_sequences"] else None
    d_h = [g for g in (None if a["return_sequences"] else grads.get(0), grads.get(1)) if g is not None]
    d_h = d_h[0] if len(d_h) == 1 else (rw.emit1("add", d_h) if d_h else None)
    d_c = grads.get(2)
    present = [g for g in (d_seq, d_h, d_c) if g is not None]
    dz = rw.emit1("lstm_scan_grad", [recurrent, c_seq, gates, *present],
                  has_dseq=d_seq is not None, has_dh=d_h is not None, has_dc=d_c is not None)
    kernel_t = rw.emit1("transpose", [kernel], perm=(1, 0))
    dx = rw.emit1("matmul", [dz, kernel_t])
    if a["go_backwards"]:
        dx = rw.emit1("flip", [dx], axis=1)
    steps = h_seq.shape[1]
    h_prev = rw.emit1("slice", [rw.emit1("pad", [h_seq], axis=1, before=1, after=0)], axis=1, start=0, stop=steps)
    d_bias = rw.emit1("sum", [dz], axes=(0, 1), keepdims=False)  # also lstm_grad's d bias at a zero bias
    return [dx, _dense_kernel_grad(rw, x_read, dz), _dense_kernel_grad(rw, h_prev, dz), d_bias]


RULES = [("lstm", lstm_to_scan), ("lstm_grad", lstm_grad_to_scan)]
