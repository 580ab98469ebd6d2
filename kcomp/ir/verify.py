"""The verifier: checks every invariant a pass must keep.

Run after each pass in the pipeline; a failure is a kcomp bug (or a bad
hand-made graph) and raises GraphError naming the node.
"""

from kcomp.errors import GraphError, KcompError
from kcomp.ir.graph import Graph
from kcomp.ir.registry import OPS


def verify(graph: Graph) -> Graph:
    defined: dict[int, object] = {}

    def define(v, where):
        if v.id in defined:
            raise GraphError(f"value %{v.id} is defined twice (again by {where})")
        defined[v.id] = v

    names = set()
    for v in (*graph.inputs, *graph.params):
        if not v.name:
            raise GraphError(f"graph input/param %{v.id} has no name")
        if v.name in names:
            raise GraphError(f"two graph inputs/params are named {v.name!r}")
        names.add(v.name)
        define(v, "a graph input")
    for i, node in enumerate(graph.nodes):
        where = f"node {i} ({node.op}, from {node.origin or 'no layer'})"
        opdef = OPS.get(node.op)
        if opdef is None:
            raise GraphError(f"{where}: unknown op {node.op!r}")
        for v in node.inputs:
            if defined.get(v.id) != v:
                raise GraphError(f"{where}: input %{v.id} is used before it is defined")
        try:
            opdef.check_arity(len(node.inputs))
            attrs = opdef.resolve_attrs(node.attrs)
            specs = opdef.infer([v.spec for v in node.inputs], **attrs)
        except KcompError as e:
            raise GraphError(f"{where}: {e}") from e
        if attrs != node.attrs:
            raise GraphError(f"{where}: attributes {node.attrs} are not complete ({attrs})")
        if [s for s in specs] != [v.spec for v in node.outputs]:
            raise GraphError(f"{where}: outputs {[v.spec for v in node.outputs]} disagree with the shape rule {specs}")
        for v in node.outputs:
            define(v, where)
    for v in graph.outputs:
        if defined.get(v.id) != v:
            raise GraphError(f"graph output %{v.id} is not defined")
    for pid in graph.frozen_params:
        if pid not in {p.id for p in graph.params}:
            raise GraphError(f"frozen param %{pid} is not a param")
    return graph
