"""convert_dtype: the same graph computing in another float dtype (kcomp build --dtype bfloat16).

Every float32 input, parameter and result becomes `dtype`; nodes are re-emitted
through the registry so every shape/dtype rule checks the converted graph.
"""

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Graph


def convert_dtype(graph: Graph, dtype: str, source: str = "float32") -> Graph:
    if dtype == source:
        return graph
    b = GraphBuilder(graph.name)
    new = {}

    def swap(d):
        return dtype if d == source else d

    for v in graph.inputs:
        new[v.id] = b.input(v.shape, swap(v.dtype), v.name)
    for p in graph.params:
        new[p.id] = b.param(p.id, p.shape, swap(p.dtype), p.name, trainable=p.id not in graph.frozen_params)
    for node in graph.nodes:
        attrs = dict(node.attrs)
        if "dtype" in attrs:  # constants and casts
            attrs["dtype"] = swap(attrs["dtype"])
        with b.scope(node.origin):
            outs = b.emit(node.op, [new[v.id] for v in node.inputs], **attrs)
        new.update({old.id: out for old, out in zip(node.outputs, outs)})
    return b.finish([new[v.id] for v in graph.outputs], kind=graph.kind)
