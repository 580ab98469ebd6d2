"""FTRL-proximal: keras/src/optimizers/ftrl.py.

With n the accumulator (starting at initial_accumulator_value), z the linear
slot, q = -learning_rate_power and l2 = l2_regularization_strength + beta / (2 lr):
    n' = n + g**2
    z += g + 2 * l2_shrinkage * p - (n'**q - n**q) / lr * p
    p = (clip(z, -l1, l1) - z) / (n'**q / lr + 2 * l2)
"""

from __future__ import annotations

import math

import torch

from kcomp.ir.optim.record import NON_NEGATIVE, Algorithm, Hyper, in_range, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, learning_rate_power, initial_accumulator_value, l1_regularization_strength,
              l2_regularization_strength, l2_shrinkage_regularization_strength, beta):
    n, z = slots
    q = -learning_rate_power
    l2 = l2_regularization_strength + beta / (2.0 * lr)
    new_n = n + g * g
    z = z + (g + 2 * l2_shrinkage_regularization_strength * p) - (_power(new_n, q) - _power(n, q)) / lr * p
    quadratic = _power(new_n, q) / lr + 2 * l2
    l1 = l1_regularization_strength
    return (torch.clamp(z, -l1, l1) - z) / quadratic, [new_n, z]


def _power(x, q):
    # The difference of two powers divided by lr is ill-conditioned in float32: computed as the kernel
    # computes it (a correctly rounded square root for the default q), float32 steps agree with it.
    return x.sqrt() if q == 0.5 else x.pow(q)


@triton_hook
def power(x, q, POWER: tl.constexpr):
    """x**q for x >= 0: a square root for Keras's default q = 0.5; x**0 is 1, as torch.pow's."""
    if POWER == "sqrt":
        result = tl.sqrt(x)
    elif POWER == "one":
        result = tl.full(x.shape, 1.0, tl.float32)
    else:
        result = tl.exp2(q * tl.log2(x))  # 0**q = exp2(-inf) = 0 for q > 0
    return result


@triton_hook
def update(row, offs, mask, p, g, lr, step, q, l1, l2_base, beta, l2_shrinkage, K: tl.constexpr, POWER: tl.constexpr):
    n = slot(row, 0, offs, mask)
    new_n = n + g * g
    z = slot(row, 1, offs, mask) + (g + 2.0 * l2_shrinkage * p) - (power(new_n, q, POWER) - power(n, q, POWER)) / lr * p
    quadratic = power(new_n, q, POWER) / lr + 2.0 * (l2_base + beta / (2.0 * lr))
    clipped = tl.minimum(tl.maximum(z, -l1, propagate_nan=tl.PropagateNan.ALL), l1, propagate_nan=tl.PropagateNan.ALL)
    set_slot(row, 0, K, offs, mask, new_n)
    set_slot(row, 1, K, offs, mask, z)
    return (clipped - z) / quadratic


def triton_arguments(h):
    q = -h["learning_rate_power"]
    scalars = dict(q=q, l1=h["l1_regularization_strength"], l2_base=h["l2_regularization_strength"], beta=h["beta"],
                   l2_shrinkage=h["l2_shrinkage_regularization_strength"])
    return scalars, {"POWER": "sqrt" if q == 0.5 else "one" if q == 0 else "general"}


RECORD = Algorithm(
    name="ftrl", keras_class="Ftrl", learning_rate=0.001,
    doc="FTRL-proximal: follow the regularised leader, with L1 and L2 (and L2 shrinkage) regularisation.",
    hyper=(Hyper("learning_rate_power", -0.5, in_range(-math.inf, 0.0, high_included=True)),
           Hyper("initial_accumulator_value", 0.1), Hyper("l1_regularization_strength", 0.0),
           Hyper("l2_regularization_strength", 0.0), Hyper("l2_shrinkage_regularization_strength", 0.0),
           Hyper("beta", 0.0, NON_NEGATIVE)),
    slot_groups=lambda h: (("accumulator", "linear"),),
    initial_values=lambda h: (h["initial_accumulator_value"], 0.0),
    reference=reference,
    triton_update=update,
    triton_arguments=triton_arguments,
    flops=20,
)
