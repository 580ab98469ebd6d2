"""optimizer_update: one op that updates every parameter of a model in one step.

Inputs: the n parameters, their n gradients, their optimizer slots (k per
parameter, in parameter order: slot j of parameter i at n*2 + i*k + j), then
the learning rate and the step count (float scalars; step counts from 1).
Outputs: the n new parameters, then the new slots. One op for all of them is
what lets the back end update the whole model with one (multi-tensor) launch.

Attributes: the algorithm, the parameter count, and `hyper`, the algorithm's
hyper-parameters as sorted (name, value) pairs (any left out take Keras's
default). A LossScaleOptimizer's step (kcomp/optimizers/loss_scale.py) adds, after the step:
`skip`, a 0-d 0/1 `finite` input, where 0 leaves every parameter and slot as it was (Keras skips
the step whose gradients hold an inf or NaN); `unscale`, a 0-d `scale` input each gradient is
divided by first. The one update kernel does both, so neither costs a launch per parameter. Each algorithm is one record in kcomp/ir/optim/: its hyper-parameters,
slots and formulas (Keras 3's, epsilon placement included) are read from there.
"""

import functools

import torch

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import can_read_back
from kcomp.ir.optim import ALGORITHMS, get
from kcomp.ir.types import TensorSpec


def hyper_attr(hyper: dict) -> tuple:
    """The `hyper` attribute for these hyper-parameters: sorted (name, value) pairs."""
    return tuple(sorted(hyper.items()))


@functools.lru_cache(maxsize=64)
def _resolved(algorithm: str, hyper: tuple):
    """The record, its every hyper-parameter and its slot count: checked once per (algorithm,
    hyper) rather than at every step (the checks were a tenth of a small model's update)."""
    record = get(algorithm)
    h = record.resolve(hyper)
    return record, h, record.slot_count(h)


def _split(values, n, k):
    params, grads = values[:n], values[n : 2 * n]
    slots = [values[2 * n + i * k : 2 * n + (i + 1) * k] for i in range(n)]
    lr, step = values[2 * n + n * k : 2 * n + n * k + 2]
    return params, grads, slots, lr, step


def guard_inputs(values, n, k, skip, unscale) -> tuple:
    """(finite, scale) among an update's inputs, each None where its attribute is off."""
    extra = list(values[2 * n + n * k + 2 :])
    finite = extra.pop(0) if skip else None
    scale = extra.pop(0) if unscale else None
    return finite, scale


def _infer(inputs, algorithm, count, hyper, skip, unscale):
    k = get(algorithm).slot_count(get(algorithm).resolve(hyper))
    expected = count * (2 + k) + 2 + int(skip) + int(unscale)
    if len(inputs) != expected:
        raise ShapeError(f"optimizer_update[{algorithm}] over {count} parameters takes {expected} inputs, received {len(inputs)}.")
    params, grads, slots, lr, step = _split(inputs, count, k)
    if any(x is not None and x.shape != () for x in guard_inputs(inputs, count, k, skip, unscale)):
        raise ShapeError("optimizer_update: the finite flag and the loss scale must be scalars.")
    for p, g, s in zip(params, grads, slots):
        if g.shape != p.shape or any(x.shape != p.shape for x in s):
            raise ShapeError(f"optimizer_update: gradient/slots of shapes {[g.shape, *[x.shape for x in s]]} do not match parameter {p.shape}.")
    if lr.shape != () or step.shape != ():
        raise ShapeError("optimizer_update: the learning rate and the step must be scalars.")
    return [TensorSpec(p.shape, p.dtype) for p in params] + [TensorSpec(x.shape, x.dtype) for s in slots for x in s]


def _update(*values, algorithm, count, hyper, skip=False, unscale=False):
    record, h, k = _resolved(algorithm, hyper)
    params, grads, slots, lr, step = _split(values, count, k)
    finite, scale = guard_inputs(values, count, k, skip, unscale)
    if scale is not None:
        grads = [g / scale for g in grads]
    # lr and step stay tensors: reading them as Python numbers would stall a GPU (and a captured
    # step). On the CPU (the reference executor) they may be read, which lets an update use torch's
    # fused ops (addcdiv, lerp) instead of a temporary per arithmetic step.
    on_cpu = lr.device.type == "cpu" and can_read_back(lr)
    new_params, new_slots = [], []
    for p, g, s in zip(params, grads, slots):
        p, s = record.reference(p, g, list(s), lr, step, on_cpu, **h)
        new_params.append(p)
        new_slots.extend(s)
    news = new_params + new_slots
    if finite is not None:  # a skipped step keeps the old values exactly (NaN in the new ones does not leak)
        olds = [*params, *(x for s in slots for x in s)]
        news = [torch.where(finite != 0, new, old) for new, old in zip(news, olds)]
    return tuple(news)


def update_in_place(*values, algorithm, count, hyper, skip=False, unscale=False):
    """_update written over its parameters and slots (the algorithm's reference_in_place, the same
    bits), which it returns: for a runner whose state these outputs replace, where no other tensor
    of the run shares their memory (kcomp/runtime/reference_fusions.py checks); not for a guarded
    update (skip, unscale), whose flag it would have to read on the host."""
    if skip or unscale:
        raise ValueError("update_in_place: a guarded update (skip, unscale) has no in-place form")
    record, h, k = _resolved(algorithm, hyper)
    params, grads, slots, lr, step = _split(values, count, k)
    on_cpu = lr.device.type == "cpu" and can_read_back(lr)
    record.reference_in_place(params, grads, [list(s) for s in slots], lr, step, on_cpu, **h)
    return (*params, *(x for s in slots for x in s))


OPS = [
    OpDef(
        name="optimizer_update",
        doc="One optimizer step for every parameter: (params, grads, slots, lr, step) -> (new params, new slots).",
        num_inputs=(2, None),
        attrs={
            "algorithm": attr(str, choices=tuple(ALGORITHMS)),
            "count": attr(int),
            "hyper": attr(tuple, (), items=tuple, doc="(name, value) pairs; the algorithm's record has the defaults"),
            "skip": attr(bool, False, doc="a 0-d 0/1 `finite` input follows the step: 0 keeps every value"),
            "unscale": attr(bool, False, doc="a 0-d `scale` input follows: each gradient is divided by it first"),
        },
        infer=_infer,
        reference=_update,
        traits={"optimizer"},
        num_outputs=None,
    ),
]
