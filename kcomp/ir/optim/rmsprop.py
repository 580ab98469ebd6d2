"""RMSprop: keras/src/optimizers/rmsprop.py.

Keras adds epsilon under the square root: p -= lr * g / sqrt(v + epsilon).
Slots: v, then the momentum buffer (with momentum), then the mean gradient
(centered) last; centered divides by sqrt(v - mean**2 + epsilon).
"""

from __future__ import annotations

import torch

from kcomp.ir.optim.record import FRACTION, FRACTION_OR_ONE, Algorithm, Hyper, flag, triton_hook
from kcomp.ir.optim.triton_lib import set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, rho, momentum, epsilon, centered):
    if on_cpu and not (momentum or centered):
        return _plain_on_cpu(p, g, slots[0], lr.item(), rho, epsilon)
    p, slots = p.clone(), [x.clone() for x in slots]
    _update_in_place(p, g, slots, lr, rho, momentum, epsilon, centered)
    return p, slots


def reference_in_place(params, grads, slots, lr, step, on_cpu, **hyper):
    """`reference` for every parameter at once, each new value written over the old (the same torch ops, in place)."""
    if on_cpu and not (hyper["momentum"] or hyper["centered"]) and params:
        _plain_in_place_on_cpu(params, grads, [s[0] for s in slots], lr.item(), hyper["rho"], hyper["epsilon"])
        return
    for p, g, s in zip(params, grads, slots):
        _update_in_place(p, g, s, lr, **hyper)


def _update_in_place(p, g, slots, lr, rho, momentum, epsilon, centered):
    """The update written over p and slots, in tensor arithmetic (lr stays a tensor): everywhere but
    the plain update on the CPU, which reference and reference_in_place take first."""
    v = slots[0]
    v.mul_(rho).add_((1 - rho) * g * g)
    denominator = v + epsilon
    if centered:
        average = slots[-1]
        average.mul_(rho).add_((1 - rho) * g)
        denominator = v - average * average + epsilon
    increment = lr * g / denominator.sqrt()
    if momentum:
        buffer = slots[1]
        buffer.mul_(momentum).add_(increment)
        p.sub_(buffer)
    else:
        p.sub_(increment)


def _plain_in_place_on_cpu(params, grads, vs, lr, rho, epsilon):
    """_update_in_place's plain CPU ops, each one multi-tensor call over every parameter
    (torch._foreach_*: on the CPU the same single-tensor ops one after another, the same bits; five
    calls for the model instead of five per parameter)."""
    torch._foreach_mul_(vs, rho)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - rho)
    denominators = torch._foreach_add(vs, epsilon)
    torch._foreach_sqrt_(denominators)
    torch._foreach_addcdiv_(params, grads, denominators, value=-lr)


def _plain_on_cpu(p, g, v, lr, rho, epsilon):
    """The default RMSprop on the CPU in four passes over the parameter instead of ten (each new
    tensor written once, fused multiply-adds): a Keras-sized embedding table's update was most of
    the step's time outside the LSTM. addcdiv scales g / sqrt(...) by lr, Keras (lr * g) / sqrt(...):
    the same to the last bit or one ulp apart."""
    v = torch.addcmul(v * rho, g, g, value=1 - rho)  # Keras: rho * v + (1 - rho) * square(g)
    return torch.addcdiv(p, g, (v + epsilon).sqrt_(), value=-lr), [v]


@triton_hook
def update(row, offs, mask, p, g, lr, step, momentum, rho, one_minus_rho, epsilon,
           K: tl.constexpr, MOMENTUM: tl.constexpr, CENTERED: tl.constexpr):
    v = rho * slot(row, 0, offs, mask) + one_minus_rho * g * g
    set_slot(row, 0, K, offs, mask, v)
    denominator = v + epsilon  # Keras: epsilon inside the square root
    if CENTERED:
        average = rho * slot(row, K - 1, offs, mask) + one_minus_rho * g
        set_slot(row, K - 1, K, offs, mask, average)
        denominator = v - average * average + epsilon
    increment = lr * g / tl.sqrt(denominator)
    if MOMENTUM:
        buffer = momentum * slot(row, 1, offs, mask) + increment
        set_slot(row, 1, K, offs, mask, buffer)
        increment = buffer
    return p - increment


RECORD = Algorithm(
    name="rmsprop", keras_class="RMSprop", learning_rate=0.001,
    doc="RMSprop: divide by a moving root mean square of the gradient; optional momentum and centering.",
    hyper=(Hyper("rho", 0.9, FRACTION), Hyper("momentum", 0.0, FRACTION_OR_ONE), Hyper("epsilon", 1e-7),
           Hyper("centered", False, flag)),
    slot_groups=lambda h: (("velocity",),) + ((("momentum",),) if h["momentum"] else ())
    + ((("average_gradient",),) if h["centered"] else ()),
    reference=reference,
    reference_in_place=reference_in_place,
    triton_update=update,
    triton_arguments=lambda h: (dict(momentum=h["momentum"], rho=h["rho"], one_minus_rho=1.0 - h["rho"], epsilon=h["epsilon"]),
                                {"MOMENTUM": bool(h["momentum"]), "CENTERED": h["centered"]}),
    flops=10,
)
