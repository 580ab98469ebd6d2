"""The IR's interpreter: each node runs its op's torch reference (OpDef.reference).

The reference executor (kcomp.runtime.reference) is this interpreter; a fused kernel node's
own reference runs its body with it. A run that holds a coarse backward op (lstm_grad, ...)
lets its forward op leave its autograd tape for it (kcomp.ir.saved_forwards).
"""

import torch

from kcomp.ir import saved_forwards
from kcomp.ir.graph import Graph


def run_graph(graph: Graph, inputs, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run `graph` on `inputs` (tensors in graph.inputs order) with weights `params` (by name)."""
    from kcomp.ir.registry import OPS  # the registry imports the kernel op, whose reference calls this

    steps = [(OPS[node.op].reference, node.inputs, node.attrs, node.outputs) for node in graph.nodes]
    return run_steps(graph, steps, inputs, params)


def run_steps(graph: Graph, steps, inputs, params: dict[str, torch.Tensor], release=None,
              taped=None) -> list[torch.Tensor]:
    """Run `steps`, (function, input values, attrs, output values) in order, that compute `graph`'s
    outputs: its nodes' references, or the reference executor's schedule of them
    (kcomp.runtime.reference). `release`, one list of value ids per step, names the values the
    run lets go of after that step (their last reader), so a tensor is freed as soon as it is dead.
    `taped`: saved_forwards.forwards_with_backward(graph.nodes), where the caller keeps it."""
    env: dict[int, torch.Tensor] = {}
    for v, t in zip(graph.inputs, inputs, strict=True):
        env[v.id] = t
    for p in graph.params:
        env[p.id] = params[p.name]
    if taped is None:
        taped = saved_forwards.forwards_with_backward(graph.nodes)
    with saved_forwards.for_run(taped):
        for k, (fn, ins, attrs, outs) in enumerate(steps):
            result = fn(*(env[v.id] for v in ins), **attrs)
            if isinstance(result, torch.Tensor):
                result = (result,)
            for v, t in zip(outs, result, strict=True):
                env[v.id] = t
            for dead in release[k] if release is not None else ():
                del env[dead]
    return [env[v.id] for v in graph.outputs]
