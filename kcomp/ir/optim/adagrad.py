"""Adagrad: keras/src/optimizers/adagrad.py.

The accumulator starts at initial_accumulator_value and sums g**2;
p -= lr * g / sqrt(accumulator + epsilon) (Keras: epsilon under the root).
"""

from __future__ import annotations

from kcomp.ir.optim.record import Algorithm, Hyper, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, initial_accumulator_value, epsilon):
    accumulator = slots[0] + g * g
    return p - lr * g / (accumulator + epsilon).sqrt(), [accumulator]


@triton_hook
def update(row, offs, mask, p, g, lr, step, epsilon, K: tl.constexpr):
    accumulator = slot(row, 0, offs, mask) + g * g
    set_slot(row, 0, K, offs, mask, accumulator)
    return p - lr * g / tl.sqrt(accumulator + epsilon)


RECORD = Algorithm(
    name="adagrad", keras_class="Adagrad", learning_rate=0.001,
    doc="Adagrad: divide by the root of the sum of all squared gradients so far.",
    hyper=(Hyper("initial_accumulator_value", 0.1), Hyper("epsilon", 1e-7)),
    slot_groups=lambda h: (("accumulator",),),
    initial_values=lambda h: (h["initial_accumulator_value"],),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: ({"epsilon": h["epsilon"]}, {}),
    flops=7,
)
