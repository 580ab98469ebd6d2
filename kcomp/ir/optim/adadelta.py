"""Adadelta: keras/src/optimizers/adadelta.py.

Two moving averages, of g**2 and of the squared update, with rms(x) = sqrt(x + epsilon):
    a_g = rho * a_g + (1 - rho) * g**2
    delta = -rms(a_d) * g / rms(a_g)          (a_d as the step found it)
    a_d = rho * a_d + (1 - rho) * delta**2
    p += lr * delta
"""

from __future__ import annotations

from kcomp.ir.optim.record import FRACTION, Algorithm, Hyper, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, rho, epsilon):
    grads, deltas = slots
    grads = rho * grads + (1 - rho) * g * g
    delta = -((deltas + epsilon).sqrt() * g) / (grads + epsilon).sqrt()
    deltas = rho * deltas + (1 - rho) * delta * delta
    return p + lr * delta, [grads, deltas]


@triton_hook
def update(row, offs, mask, p, g, lr, step, rho, one_minus_rho, epsilon, K: tl.constexpr):
    grads = rho * slot(row, 0, offs, mask) + one_minus_rho * g * g
    deltas = slot(row, 1, offs, mask)
    delta = -(tl.sqrt(deltas + epsilon) * g) / tl.sqrt(grads + epsilon)
    set_slot(row, 0, K, offs, mask, grads)
    set_slot(row, 1, K, offs, mask, rho * deltas + one_minus_rho * delta * delta)
    return p + lr * delta


RECORD = Algorithm(
    name="adadelta", keras_class="Adadelta", learning_rate=0.001,
    doc="Adadelta: steps scaled by the ratio of moving root mean squares of past updates and gradients.",
    hyper=(Hyper("rho", 0.95, FRACTION), Hyper("epsilon", 1e-7)),
    slot_groups=lambda h: (("accumulated_grad", "accumulated_delta_var"),),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: (dict(rho=h["rho"], one_minus_rho=1.0 - h["rho"], epsilon=h["epsilon"]), {}),
    flops=14,
)
