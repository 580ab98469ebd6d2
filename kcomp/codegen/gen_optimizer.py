"""Generator for the optimizer template: one launch updates every parameter (multi-tensor).

The body is one optimizer_update node (kcomp/ir/ops/optim.py). Its inputs are
found among the kernel's by value, not by position: the fusion pass passes each
distinct value once, and two gradients may be one value. Its outputs (the new
parameters, then the new slots) are the kernel's outputs, except those nothing
reads, which fusion leaves out; the kernel writes every one, so the launch gives
those scratch buffers (the binding's `outputs` says which).

The algorithm is a record (kcomp/ir/optim/<name>.py) with a Triton update; the
generated `update` hook binds it for this node: the kernel's generic scalars
h0..h7 to the update's named ones (their values, computed by the record, are the
binding's `scalars`) and its flags as constexprs.
"""

import math

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.ir.ops.optim import guard_inputs
from kcomp.ir.optim import MAX_KERNEL_SCALARS, get as algorithm_record


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    assert node.op == "optimizer_update", node.op
    a = node.attrs
    n, algorithm = a["count"], a["algorithm"]
    record = algorithm_record(algorithm)
    hyper = record.resolve(a["hyper"])
    k = record.slot_count(hyper)
    scalars, constexprs = record.triton_arguments(hyper)
    index = {v.id: i for i, v in enumerate(body.inputs)}
    args = [index[v.id] for v in node.inputs]
    params, grads, slots, (lr, step) = args[:n], args[n : 2 * n], args[2 * n : 2 * n + n * k], args[2 * n + n * k : 2 * n + n * k + 2]
    finite, scale = guard_inputs(args, n, k, a["skip"], a["unscale"])
    position = {v.id: j for j, v in enumerate(body.outputs)}
    h = [f"h{i}" for i in range(MAX_KERNEL_SCALARS)]
    bound = [f"{name}={h[i]}" for i, name in enumerate(scalars)] + [f"K={k}"] + [f"{name}={value!r}" for name, value in constexprs.items()]
    settings = ", ".join(f"{name}={value!r}" for name, value in hyper.items())
    hooks = (
        "from kcomp.kernels.optimizer import triton_update\n\n"
        f"# {algorithm}: {settings}; {_count(n, 'parameter')}, {_slot_names(record.slot_names(hyper))}\n"
        f"# its update (kcomp/ir/optim), taking the binding's scalars in h0..h{len(h) - 1}\n"
        f"algorithm_update = triton_update({algorithm!r})\n\n\n"
        "@triton.jit\n"
        f"def update(row, offs, mask, p, g, lr, step, {', '.join(h)}):\n"
        f"    return algorithm_update(row, offs, mask, p, g, lr, step, {', '.join(bound)})\n"
    )
    return GeneratedKernel(hooks, {
        "update": "update",
        "params": repr(tuple(params)),
        "grads": repr(tuple(grads)),
        "slots": repr(tuple(slots)),
        "lr": repr(lr),
        "step": repr(step),
        "finite": repr(finite),
        "scale": repr(scale),
        "scalars": _scalars(scalars),
        "outputs": repr(tuple(position.get(v.id) for v in node.outputs)),
    })


def _scalars(scalars: dict) -> str:
    """The scalars as a tuple of float literals, one a line with its name (exact: repr round-trips)."""
    if not scalars:
        return "()"
    lines = "".join(f"        {_float(value)},  # h{i}: {name}\n" for i, (name, value) in enumerate(scalars.items()))
    return "(\n" + lines + "    )"


def _float(value) -> str:
    value = float(value)
    return repr(value) if math.isfinite(value) else f"float({str(value)!r})"  # log(0) is -inf


def _slot_names(names) -> str:
    """ "2 slots each (m, v)", in the op's slot order."""
    return f"{_count(len(names), 'slot')} each ({', '.join(names)})" if names else "no slots"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


GENERATES = {"optimizer": generate}  # template name -> generator (kcomp.codegen.module collects these)
