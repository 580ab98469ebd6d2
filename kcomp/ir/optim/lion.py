"""Lion: keras/src/optimizers/lion.py.

    p -= lr * sign(beta_1 * m + (1 - beta_1) * g)
    m = beta_2 * m + (1 - beta_2) * g
Keras requires beta_1 in (0, 1] (at 0 Lion is sign SGD).
"""

from __future__ import annotations

from kcomp.ir.optim.record import FRACTION_OR_ONE, Algorithm, Hyper, in_range, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, beta_1, beta_2):
    (m,) = slots
    return p - lr * (m * beta_1 + g * (1.0 - beta_1)).sign(), [m * beta_2 + g * (1.0 - beta_2)]


@triton_hook
def update(row, offs, mask, p, g, lr, step, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2, K: tl.constexpr):
    m = slot(row, 0, offs, mask)
    direction = m * beta_1 + g * one_minus_beta_1
    # As torch.sign (Keras's ops.sign): -1, 0 or 1, and 0 for NaN, which leaves the parameter as it is.
    sign = tl.where(direction > 0, 1.0, tl.where(direction < 0, -1.0, 0.0))
    set_slot(row, 0, K, offs, mask, m * beta_2 + g * one_minus_beta_2)
    return p - lr * sign


RECORD = Algorithm(
    name="lion", keras_class="Lion", learning_rate=0.001,
    doc="Lion: steps of fixed size lr in the sign of an interpolation of momentum and gradient.",
    hyper=(Hyper("beta_1", 0.9, in_range(0.0, 1.0, low_included=False, high_included=True)),
           Hyper("beta_2", 0.99, FRACTION_OR_ONE)),
    slot_groups=lambda h: (("momentum",),),
    reference=reference,
    triton_update=update,
    triton_arguments=lambda h: (dict(beta_1=h["beta_1"], one_minus_beta_1=1.0 - h["beta_1"], beta_2=h["beta_2"],
                                     one_minus_beta_2=1.0 - h["beta_2"]), {}),
    flops=8,
)
