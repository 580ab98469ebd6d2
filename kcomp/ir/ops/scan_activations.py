"""The activations of the recurrence scans (lstm_scan, gru_scan, simple_rnn_scan and their
gradients): any elementwise Keras activation, as the coarse ops take (recurrent.CELL_ACTIVATIONS).

Each scan takes `activation` (default tanh) and, the gated cells, `recurrent_activation`
(default sigmoid) as attributes. The references apply the activations' own torch functions forward
and their VJP rules backward (vjp, vjp_from_output); the kernels' hooks are the activations'
lowerings and VJP rules (kcomp/codegen/activation_hooks.py), both from vjp_graph.

What the forward saves for the backward: where every activation's VJP rule reads only its output
(tanh: 1 - y^2, sigmoid: y (1 - y), relu: threshold_grad(g, y), linear, exponential, softsign; Keras's defaults
among them) a scan saves the activated gates; with any other it saves the pre-activations
(saves_pre) and the backward computes the activations again from them. SimpleRNN's scans save
every h_t, and with such an activation every step's pre-activation too (simple_rnn_scan's save).
"""

from functools import cache

from kcomp.ir.opdef import attr
from kcomp.ir.ops.recurrent import CELL_ACTIVATIONS, cell_activation
from kcomp.ir.types import DTYPE_OF_TORCH

ACTIVATION_ATTR = attr(str, "tanh", CELL_ACTIVATIONS, doc="the cell's activation (Keras's `activation`)")
RECURRENT_ACTIVATION_ATTR = attr(str, "sigmoid", CELL_ACTIVATIONS,
                                 doc="the gates' activation (Keras's `recurrent_activation`)")
ACTIVATION_ATTRS = {"activation": ACTIVATION_ATTR, "recurrent_activation": RECURRENT_ACTIVATION_ATTR}


@cache
def vjp_graph(op: str, name: str = "activation", dtype: str = "float32"):
    """(graph, forward node, x, y, g, dx): a tiny IR graph of activation `op` (default attributes),
    inputs x and g, y = op(x), and dx = g * op'(x) from the op's VJP rule (its nodes follow the
    forward node; dx is g itself for the identity). Its constants are in `dtype` (gelu's
    1 / sqrt(2 pi) rounded to float32 would be off by 1e-7 in a float64 run)."""
    from kcomp.ir.builder import GraphBuilder  # at call time: the registry imports this module's users
    from kcomp.ir.registry import OPS

    b = GraphBuilder(name)
    x, g = b.input((1,), dtype, "x"), b.input((1,), dtype, "g")
    with b.scope(name):
        y = b.emit1(op, [x])
        forward = b.nodes[-1]
        (dx,) = OPS[op].vjp(b, forward, [g])
    return b.finish([y, dx]), forward, x, y, g, dx


@cache
def reads_input(op: str) -> bool:
    """Whether activation `op`'s VJP rule reads its input x (else its output y and g alone)."""
    graph, _, x, *_ = vjp_graph(op)
    return any(v.id == x.id for node in graph.nodes[1:] for v in node.inputs)


def saves_pre(*activations: str) -> bool:
    """Whether a scan with these activations saves its gates' pre-activations (else their outputs)."""
    return any(reads_input(a) for a in activations)


def vjp(name: str, x, g):
    """g times the derivative of activation `name` at x: its VJP rule run by the IR's interpreter on
    x and g, as the reference executor runs every other op's gradient. (torch.autograd through the
    activation's torch function would differ at a NaN x between torch's vectorized loops and the
    scalar loop for a tensor's last elements: F.elu's gradient there is NaN in one and g in the
    other. The rules are checked against autograd in tests/test_vjp_special_values.py.)"""
    from kcomp.ir.interpret import run_graph

    graph, *_ = vjp_graph(name, dtype=DTYPE_OF_TORCH[x.dtype])
    return run_graph(graph, [x, g], {})[1]


def vjp_from_output(name: str, y, g):
    """g times the derivative of activation `name` (one whose VJP rule does not read its input) at
    the x that gave y: its VJP rule run by the IR's interpreter on y and g."""
    from kcomp.ir.interpret import run_graph

    assert not reads_input(name), name
    graph, forward, x, _, _, dx = vjp_graph(name, dtype=DTYPE_OF_TORCH[y.dtype])
    backward = type(graph)(graph.name, (graph.inputs[0], graph.inputs[1], forward.output), (), graph.nodes[1:], (dx,),
                           frozenset(), graph.kind)
    (result,) = run_graph(backward, [y, g, y], {})  # x (never read) stands as y
    return result


def gate_value(name: str, saved, pre: bool):
    """A gate's activated value from what the forward saved: its pre-activation (pre), else itself."""
    return cell_activation(name)(saved) if pre else saved


def gate_vjp(name: str, saved, g, pre: bool):
    """g times the derivative of the gate's activation, from what the forward saved (gate_value)."""
    return vjp(name, saved, g) if pre else vjp_from_output(name, saved, g)
