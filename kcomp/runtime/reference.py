"""The reference executor: each IR node runs its registry torch implementation.

It is the oracle every compiled kernel is checked against, and the default on
a machine without a GPU.
"""

import torch

from kcomp.ir.graph import Graph
from kcomp.ir.registry import OPS


def run_reference(graph: Graph, inputs, params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Run `graph` on `inputs` (tensors in graph.inputs order) with weights `params` (by name)."""
    env: dict[int, torch.Tensor] = {}
    for v, t in zip(graph.inputs, inputs, strict=True):
        env[v.id] = t
    for p in graph.params:
        env[p.id] = params[p.name]
    for node in graph.nodes:
        result = OPS[node.op].reference(*(env[v.id] for v in node.inputs), **node.attrs)
        if isinstance(result, torch.Tensor):
            result = (result,)
        for v, t in zip(node.outputs, result, strict=True):
            env[v.id] = t
    return [env[v.id] for v in graph.outputs]
