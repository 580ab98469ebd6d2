"""Adam and AdamW (Adam with decoupled weight decay): keras/src/optimizers/adam.py, adamw.py.

Keras folds the bias corrections into the step size and adds epsilon to
sqrt(v): p -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon).
AdamW first applies p -= p * weight_decay * lr, on the old value.
AMSGrad keeps the running maximum of v as a third slot and divides by it.
"""

from __future__ import annotations

import dataclasses

import torch

from kcomp.ir.optim.record import FRACTION, NON_NEGATIVE, Algorithm, Hyper, flag, triton_hook
from kcomp.ir.optim.triton_lib import log, one_minus_power, set_slot, slot

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


def reference(p, g, slots, lr, step, on_cpu, beta_1, beta_2, epsilon, amsgrad, weight_decay=0.0):
    if weight_decay:
        p = p - p * weight_decay * lr  # decoupled weight decay, applied before the update (Keras)
    alpha = lr * torch.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    # Keras: m += (g - m) * (1 - beta_1), which is lerp's formula for weights below 0.5.
    g = g.to(slots[0].dtype)  # lerp takes one dtype (the arithmetic it replaces promoted)
    m = torch.lerp(slots[0], g, 1 - beta_1)
    v = torch.lerp(slots[1], g * g, 1 - beta_2)
    if amsgrad:
        slots = [m, v, torch.maximum(slots[2], v)]
        v = slots[2]
    else:
        slots = [m, v]
    denominator = torch.sqrt(v).add_(epsilon)
    p = torch.addcdiv(p, m, denominator, value=-alpha.item()) if on_cpu else p - alpha * m / denominator
    return p, slots


def reference_in_place(params, grads, slots, lr, step, on_cpu, beta_1, beta_2, epsilon, amsgrad, weight_decay=0.0):
    """`reference` for every parameter at once, each new value written over the old: the same torch
    ops, each one multi-tensor call over every parameter (torch._foreach_*, as torch's own Adam with
    foreach=True; on the CPU they run the single-tensor ops one after another, the same bits) and the
    step size computed once. A small model's update was mostly per-call overhead: 24 calls for
    four parameters, now 6."""
    if not params:
        return
    alpha = lr * torch.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    if weight_decay:
        for p in params:
            p.sub_(p * weight_decay * lr)
    ms, vs = [s[0] for s in slots], [s[1] for s in slots]
    grads = [g.to(m.dtype) for g, m in zip(grads, ms)]
    torch._foreach_lerp_(ms, grads, 1 - beta_1)
    torch._foreach_lerp_(vs, torch._foreach_mul(grads, grads), 1 - beta_2)
    if amsgrad:
        v_hats = [s[2] for s in slots]
        torch._foreach_maximum_(v_hats, vs)
        vs = v_hats
    denominators = torch._foreach_sqrt(vs)
    torch._foreach_add_(denominators, epsilon)
    if on_cpu:
        torch._foreach_addcdiv_(params, ms, denominators, -alpha.item())
    else:
        torch._foreach_sub_(params, torch._foreach_div(torch._foreach_mul(ms, alpha), denominators))


@triton_hook
def update(row, offs, mask, p, g, lr, step, one_minus_beta_1, one_minus_beta_2, log_beta_1, log_beta_2, epsilon,
           weight_decay, K: tl.constexpr, DECOUPLED: tl.constexpr, AMSGRAD: tl.constexpr):
    if DECOUPLED:  # AdamW: weight decay first, on the old value
        p = p - p * weight_decay * lr
    alpha = lr * tl.sqrt(one_minus_power(log_beta_2, step)) / one_minus_power(log_beta_1, step)
    m = slot(row, 0, offs, mask)
    v = slot(row, 1, offs, mask)
    m = m + (g - m) * one_minus_beta_1
    v = v + (g * g - v) * one_minus_beta_2
    set_slot(row, 0, K, offs, mask, m)
    set_slot(row, 1, K, offs, mask, v)
    if AMSGRAD:
        v = tl.maximum(slot(row, 2, offs, mask), v, propagate_nan=tl.PropagateNan.ALL)  # NaN stays, as torch.maximum
        set_slot(row, 2, K, offs, mask, v)
    return p - alpha * m / (tl.sqrt(v) + epsilon)


def triton_arguments(h):
    """1 - beta and log(beta) in float64 here: rounded to float32 first, 1 - 0.999 would be off by 1.3e-5 relative."""
    decay = h.get("weight_decay", 0.0)
    scalars = dict(one_minus_beta_1=1.0 - h["beta_1"], one_minus_beta_2=1.0 - h["beta_2"], log_beta_1=log(h["beta_1"]),
                   log_beta_2=log(h["beta_2"]), epsilon=h["epsilon"], weight_decay=decay)
    return scalars, {"DECOUPLED": "weight_decay" in h, "AMSGRAD": h["amsgrad"]}


BETAS = (Hyper("beta_1", 0.9, FRACTION), Hyper("beta_2", 0.999, FRACTION), Hyper("epsilon", 1e-7))

RECORD = Algorithm(
    name="adam", keras_class="Adam", learning_rate=0.001,
    doc="Adam: moving averages of the gradient and its square, bias-corrected.",
    hyper=(*BETAS, Hyper("amsgrad", False, flag)),
    slot_groups=lambda h: (("momentum", "velocity"),) + ((("velocity_hat",),) if h["amsgrad"] else ()),
    reference=reference,
    reference_in_place=reference_in_place,
    triton_update=update,
    triton_arguments=triton_arguments,
    flops=12,
)

ADAMW = dataclasses.replace(
    RECORD, name="adamw", keras_class="AdamW",
    doc="AdamW: Adam with decoupled weight decay (p -= p * weight_decay * lr before the update).",
    hyper=(Hyper("weight_decay", 0.004, NON_NEGATIVE), *RECORD.hyper),
    flops=15,
)
