"""SGD, with optional (Nesterov) momentum: keras/src/optimizers/sgd.py.

Keras: m = momentum * m - lr * g; p += m (Nesterov: p += momentum * m - lr * g).
Without momentum there is no slot.
"""

from __future__ import annotations

import torch

from kcomp.ir.optim.record import FRACTION_OR_ONE, Algorithm, Hyper, flag, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, momentum, nesterov):
    if not momentum:
        return (torch.add(p, g, alpha=-lr.item()) if on_cpu else p - lr * g), []
    m = torch.add(slots[0] * momentum, g, alpha=-lr.item()) if on_cpu else slots[0] * momentum - lr * g
    return p + (momentum * m - lr * g if nesterov else m), [m]


@triton_hook
def update(row, offs, mask, p, g, lr, step, momentum, K: tl.constexpr, NESTEROV: tl.constexpr):
    if K == 0:  # no momentum, no slot
        p = p - lr * g
    else:
        m = momentum * slot(row, 0, offs, mask) - lr * g
        set_slot(row, 0, K, offs, mask, m)
        if NESTEROV:
            p = p + (momentum * m - lr * g)
        else:
            p = p + m
    return p


RECORD = Algorithm(
    name="sgd", keras_class="SGD", learning_rate=0.01,
    doc="Stochastic gradient descent, with optional (Nesterov) momentum.",
    hyper=(Hyper("momentum", 0.0, FRACTION_OR_ONE), Hyper("nesterov", False, flag)),
    slot_groups=lambda h: (("momentum",),) if h["momentum"] else (),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: ({"momentum": h["momentum"]}, {"NESTEROV": h["nesterov"]}),
    flops=4,
)
