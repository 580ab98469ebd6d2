"""Adamax (Adam with the infinity norm): keras/src/optimizers/adamax.py.

    m += (g - m) * (1 - beta_1)
    u = max(beta_2 * u, |g|)
    p -= lr * m / ((1 - beta_1**t) * (u + epsilon))
"""

from __future__ import annotations

import torch

from kcomp.ir.optim.adam import BETAS
from kcomp.ir.optim.record import Algorithm, triton_hook
from kcomp.ir.optim.triton_lib import log, one_minus_power, set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, beta_1, beta_2, epsilon):
    m, u = slots
    m = m + (g - m) * (1 - beta_1)
    u = torch.maximum(beta_2 * u, g.abs())
    return p - lr * m / ((1 - beta_1**step) * (u + epsilon)), [m, u]


@triton_hook
def update(row, offs, mask, p, g, lr, step, one_minus_beta_1, log_beta_1, beta_2, epsilon, K: tl.constexpr):
    m = slot(row, 0, offs, mask)
    m = m + (g - m) * one_minus_beta_1
    u = tl.maximum(beta_2 * slot(row, 1, offs, mask), tl.abs(g), propagate_nan=tl.PropagateNan.ALL)  # as torch.maximum
    set_slot(row, 0, K, offs, mask, m)
    set_slot(row, 1, K, offs, mask, u)
    return p - lr * m / (one_minus_power(log_beta_1, step) * (u + epsilon))


RECORD = Algorithm(
    name="adamax", keras_class="Adamax", learning_rate=0.001,
    doc="Adamax: Adam with the infinity norm (a decaying maximum of |g|) in place of the second moment.",
    hyper=BETAS,
    slot_groups=lambda h: (("momentum", "norm"),),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: (dict(one_minus_beta_1=1.0 - h["beta_1"], log_beta_1=log(h["beta_1"]), beta_2=h["beta_2"],
                                     epsilon=h["epsilon"]), {}),
    flops=12,
)
