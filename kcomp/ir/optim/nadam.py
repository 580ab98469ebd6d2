"""Nadam (Adam with Nesterov momentum): keras/src/optimizers/nadam.py.

Keras keeps one scalar variable besides m and v, u_product, the running
product of the momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96**t), updated
once per step before the parameters. It has no closed form in t, so kcomp keeps
it as a third slot of each parameter, every element holding the same product:
each element is then read and written by exactly one program of the
multi-tensor kernel (a shared scalar would be read by some programs after
others had already written it in place), at the cost of one more slot.

    u_product *= u_t;  u_next = beta_1 * (1 - 0.5 * 0.96**(t + 1))
    m += (g - m) * (1 - beta_1);  v += (g**2 - v) * (1 - beta_2)
    m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
    p -= lr * m_hat / (sqrt(v / (1 - beta_2**t)) + epsilon)
"""

from __future__ import annotations

import math

from kcomp.ir.optim.adam import BETAS
from kcomp.ir.optim.record import Algorithm, triton_hook
from kcomp.ir.optim.triton_lib import log, one_minus_power, set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)

DECAY = 0.96  # Keras's momentum schedule


def reference(p, g, slots, lr, step, on_cpu, beta_1, beta_2, epsilon):
    m, v, u_product = slots
    u_t = beta_1 * (1.0 - 0.5 * DECAY**step)
    u_next = beta_1 * (1.0 - 0.5 * DECAY ** (step + 1))
    u_product = u_product * beta_1 * (1.0 - 0.5 * DECAY**step)  # Keras's grouping
    m = m + (g - m) * (1 - beta_1)
    v = v + (g * g - v) * (1 - beta_2)
    m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
    v_hat = v / (1 - beta_2**step)
    return p - m_hat * lr / (v_hat.sqrt() + epsilon), [m, v, u_product]


@triton_hook
def update(row, offs, mask, p, g, lr, step, beta_1, one_minus_beta_1, one_minus_beta_2, log_beta_2, log_decay, epsilon,
           K: tl.constexpr):
    u_t = beta_1 * (1.0 - 0.5 * tl.exp(step * log_decay))
    u_next = beta_1 * (1.0 - 0.5 * tl.exp((step + 1.0) * log_decay))
    u_product = slot(row, 2, offs, mask) * u_t
    m = slot(row, 0, offs, mask)
    v = slot(row, 1, offs, mask)
    m = m + (g - m) * one_minus_beta_1
    v = v + (g * g - v) * one_minus_beta_2
    set_slot(row, 0, K, offs, mask, m)
    set_slot(row, 1, K, offs, mask, v)
    set_slot(row, 2, K, offs, mask, u_product)
    m_hat = u_next * m / (1.0 - u_product * u_next) + (1.0 - u_t) * g / (1.0 - u_product)
    return p - m_hat * lr / (tl.sqrt(v / one_minus_power(log_beta_2, step)) + epsilon)


RECORD = Algorithm(
    name="nadam", keras_class="Nadam", learning_rate=0.001,
    doc="Nadam: Adam with Nesterov momentum and Keras's momentum schedule.",
    hyper=BETAS,
    # m and v as Keras creates them; u_product is Keras's one scalar variable, kept per parameter here.
    slot_groups=lambda h: (("momentum", "velocity"), ("u_product",)),
    initial_values=lambda h: (0.0, 0.0, 1.0),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: (dict(beta_1=h["beta_1"], one_minus_beta_1=1.0 - h["beta_1"], one_minus_beta_2=1.0 - h["beta_2"],
                                     log_beta_2=log(h["beta_2"]), log_decay=math.log(DECAY), epsilon=h["epsilon"]), {}),
    flops=30,
)
