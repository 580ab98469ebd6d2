"""optimizer_update: one op that updates every parameter of a model in one step.

Inputs: the n parameters, their n gradients, their optimizer slots (k per
parameter, in parameter order: slot j of parameter i at n*2 + i*k + j), then
the learning rate and the step count (float scalars; step counts from 1).
Outputs: the n new parameters, then the new slots. One op for all of them is
what lets the back end update the whole model with one (multi-tensor) launch.

The formulas are Keras 3's (keras/src/optimizers/*.py), epsilon placement
included: Adam divides by sqrt(v) + epsilon with the bias correction folded
into the learning rate; RMSprop divides by sqrt(v + epsilon).
"""

import torch

from kcomp.errors import ShapeError
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER, can_read_back
from kcomp.ir.types import TensorSpec

ALGORITHMS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


def slots_per_param(algorithm: str, momentum=0.0, amsgrad=False, centered=False) -> int:
    return {
        "sgd": 1 if momentum else 0,
        "adam": 3 if amsgrad else 2,
        "adamw": 3 if amsgrad else 2,
        "rmsprop": 1 + (1 if momentum else 0) + (1 if centered else 0),
        "adagrad": 1,
    }[algorithm]


def _split(values, n, k):
    params, grads = values[:n], values[n : 2 * n]
    slots = [values[2 * n + i * k : 2 * n + (i + 1) * k] for i in range(n)]
    lr, step = values[2 * n + n * k :]
    return params, grads, slots, lr, step


def _infer(inputs, algorithm, count, momentum, nesterov, beta_1, beta_2, epsilon, amsgrad, rho, centered, weight_decay):
    k = slots_per_param(algorithm, momentum, amsgrad, centered)
    if len(inputs) != count * (2 + k) + 2:
        raise ShapeError(f"optimizer_update[{algorithm}] over {count} parameters takes {count * (2 + k) + 2} inputs, received {len(inputs)}.")
    params, grads, slots, lr, step = _split(inputs, count, k)
    for p, g, s in zip(params, grads, slots):
        if g.shape != p.shape or any(x.shape != p.shape for x in s):
            raise ShapeError(f"optimizer_update: gradient/slots of shapes {[g.shape, *[x.shape for x in s]]} do not match parameter {p.shape}.")
    if lr.shape != () or step.shape != ():
        raise ShapeError("optimizer_update: the learning rate and the step must be scalars.")
    return [TensorSpec(p.shape, p.dtype) for p in params] + [TensorSpec(x.shape, x.dtype) for s in slots for x in s]


def _update(*values, algorithm, count, momentum, nesterov, beta_1, beta_2, epsilon, amsgrad, rho, centered, weight_decay):
    k = slots_per_param(algorithm, momentum, amsgrad, centered)
    params, grads, slots, lr, step = _split(values, count, k)
    # lr and step stay tensors: reading them as Python numbers would stall a GPU (and a captured
    # step). On the CPU (the reference executor) they are read, which lets the update use torch's
    # fused ops (addcdiv, lerp) instead of a temporary per arithmetic step.
    on_cpu = lr.device.type == "cpu" and can_read_back(lr)
    new_params, new_slots = [], []
    for p, g, s in zip(params, grads, slots):
        if algorithm == "sgd":
            if momentum:  # Keras: m = momentum * m - lr * g; p += m (nesterov: p += momentum * m - lr * g)
                m = torch.add(s[0] * momentum, g, alpha=-lr.item()) if on_cpu else s[0] * momentum - lr * g
                s = [m]
                p = p + (momentum * m - lr * g if nesterov else m)
            else:
                p = torch.add(p, g, alpha=-lr.item()) if on_cpu else p - lr * g
        elif algorithm in ("adam", "adamw"):
            if algorithm == "adamw" and weight_decay:
                p = p - p * weight_decay * lr  # decoupled weight decay, applied before the update (Keras)
            alpha = lr * torch.sqrt(1 - beta_2**step) / (1 - beta_1**step)
            # Keras: m += (g - m) * (1 - beta_1), which is lerp's formula for weights below 0.5.
            g = g.to(s[0].dtype)  # lerp takes one dtype (the arithmetic it replaces promoted)
            m = torch.lerp(s[0], g, 1 - beta_1)
            v = torch.lerp(s[1], g * g, 1 - beta_2)
            if amsgrad:
                s = [m, v, torch.maximum(s[2], v)]
                v = s[2]
            else:
                s = [m, v]
            denominator = torch.sqrt(v).add_(epsilon)
            p = torch.addcdiv(p, m, denominator, value=-alpha.item()) if on_cpu else p - alpha * m / denominator
        elif algorithm == "rmsprop":
            p, s = p.clone(), [x.clone() for x in s]
            v = s[0]
            v.mul_(rho).add_((1 - rho) * g * g)
            denominator = v + epsilon
            if centered:
                avg = s[-1]
                avg.mul_(rho).add_((1 - rho) * g)
                denominator = v - avg * avg + epsilon
            increment = lr * g / torch.sqrt(denominator)
            if momentum:
                mom = s[1]
                mom.mul_(momentum).add_(increment)
                p.sub_(mom)
            else:
                p.sub_(increment)
        else:  # adagrad
            p, s = p.clone(), [x.clone() for x in s]
            (acc,) = s
            acc.add_(g * g)
            p.sub_(lr * g / torch.sqrt(acc + epsilon))
        new_params.append(p)
        new_slots.extend(s)
    return tuple(new_params + new_slots)


OPS = [
    OpDef(
        name="optimizer_update",
        doc="One optimizer step for every parameter: (params, grads, slots, lr, step) -> (new params, new slots).",
        num_inputs=(2, None),
        attrs={
            "algorithm": attr(str, choices=ALGORITHMS),
            "count": attr(int),
            "momentum": attr(NUMBER, 0.0),
            "nesterov": attr(bool, False),
            "beta_1": attr(NUMBER, 0.9),
            "beta_2": attr(NUMBER, 0.999),
            "epsilon": attr(NUMBER, 1e-7),
            "amsgrad": attr(bool, False),
            "rho": attr(NUMBER, 0.9),
            "centered": attr(bool, False),
            "weight_decay": attr(NUMBER, 0.0),
        },
        infer=_infer,
        reference=_update,
        traits={"optimizer"},
        num_outputs=None,
    ),
]
