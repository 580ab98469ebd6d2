"""The activations of the recurrence scans (lstm_scan, gru_scan, simple_rnn_scan and their
gradients): any elementwise Keras activation, as the coarse ops take (recurrent.CELL_ACTIVATIONS).

Each scan takes `activation` (default tanh) and, the gated cells, `recurrent_activation`
(default sigmoid) as attributes. The references apply the activations' own torch functions; the
kernels' hooks are the activations' lowerings and VJP rules (kcomp/codegen/activation_hooks.py).

What the forward saves for the backward: tanh's and sigmoid's derivatives are functions of their
outputs (1 - y^2, y (1 - y)), so with only those (Keras's defaults) a scan saves the activated
gates; with any other it saves the pre-activations (saves_pre) and the backward computes the
activations again from them.
"""

import torch

from kcomp.ir.opdef import attr
from kcomp.ir.ops.recurrent import CELL_ACTIVATIONS, cell_activation

# The activations whose derivative the backward computes from their output alone.
FROM_OUTPUT = {"tanh": lambda y: 1 - y * y, "sigmoid": lambda y: y * (1 - y)}

ACTIVATION_ATTR = attr(str, "tanh", CELL_ACTIVATIONS, doc="the cell's activation (Keras's `activation`)")
RECURRENT_ACTIVATION_ATTR = attr(str, "sigmoid", CELL_ACTIVATIONS,
                                 doc="the gates' activation (Keras's `recurrent_activation`)")
ACTIVATION_ATTRS = {"activation": ACTIVATION_ATTR, "recurrent_activation": RECURRENT_ACTIVATION_ATTR}


def saves_pre(*activations: str) -> bool:
    """Whether a scan with these activations saves its gates' pre-activations (else their outputs)."""
    return any(a not in FROM_OUTPUT for a in activations)


def vjp(name: str, x, g):
    """g times the derivative of activation `name` at x (autograd through its torch function)."""
    with torch.inference_mode(False), torch.enable_grad():  # executors may run under inference_mode
        x = x.detach().clone().requires_grad_()
        (dx,) = torch.autograd.grad(cell_activation(name)(x), x, g.detach().clone())
    return dx


def saved_gate(name: str, z, pre: bool):
    """What the forward saves of a gate with pre-activation z: z itself (pre), else name(z)."""
    return z if pre else cell_activation(name)(z)


def gate_value(name: str, saved, pre: bool):
    """A gate's activated value from what the forward saved (saved_gate)."""
    return cell_activation(name)(saved) if pre else saved


def gate_vjp(name: str, saved, g, pre: bool):
    """g times the derivative of the gate's activation, from what the forward saved (saved_gate)."""
    return vjp(name, saved, g) if pre else g * FROM_OUTPUT[name](saved)
