"""A stable text form of a graph, for golden tests, dumps and reports.

Node results are renumbered %0, %1, ... in definition order, so the text does
not depend on the ids a builder or pass happened to hand out. Example:

    graph sequential(%input: f32[N,100]) {
      param %dense/kernel: f32[100,64]
      param %dense/bias: f32[64]
      %0 = matmul(%input, %dense/kernel) : f32[N,64]  # dense
      %1 = bias_add(%0, %dense/bias) : f32[N,64]  # dense
      %2 = relu(%1) {max_value=None, negative_slope=0.0, threshold=0.0} : f32[N,64]  # dense
      return %2
    }
"""

import json

from kcomp.ir.graph import Graph
from kcomp.ir.types import BATCH, DTYPES, dim_parts


def _name(name: str) -> str:
    """A value's name as printed: quoted when it is not a plain path like dense_1/kernel."""
    plain = name.replace("/", "").replace("_", "").replace(".", "").replace("-", "")
    return name if plain.isalnum() and plain.isascii() else json.dumps(name)


def format_attr(value) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, tuple):
        return "(" + ", ".join(format_attr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def print_graph(graph: Graph, indent: str = "") -> str:
    """The graph as text; a kernel node's body is printed nested under it."""
    return "\n".join(indent + line for line in _lines(graph)) + "\n"


def _lines(graph: Graph) -> list[str]:
    labels: dict[int, str] = {}
    for i, v in enumerate(graph.inputs):
        labels[v.id] = f"%{_name(v.name)}" if v.name else f"%in{i}"  # a kernel body's inputs are unnamed
    for v in graph.params:
        labels[v.id] = f"%{_name(v.name)}"
    counter = 0
    for node in graph.nodes:
        for v in node.outputs:
            labels[v.id] = f"%{counter}"
            counter += 1

    # Unknown sizes print as ?0, ?1, ... in order of first appearance.
    symbols: dict[str, str] = {}

    def dim(d):
        symbol, factor = dim_parts(d)
        if factor != 1:  # folded with known axes: "N*5"
            return f"{dim(symbol)}*{factor}"
        if isinstance(d, int) or d == BATCH:
            return str(d)
        return symbols.setdefault(d, f"?{len(symbols)}")

    def type_of(v):
        return f"{DTYPES[v.dtype]}[{','.join(dim(d) for d in v.shape)}]"

    def typed(v):
        return f"{labels[v.id]}: {type_of(v)}"

    lines = [f"graph {graph.name}(" + ", ".join(typed(v) for v in graph.inputs) + ") {"]
    for p in graph.params:
        frozen = "frozen " if p.id in graph.frozen_params else ""
        lines.append(f"  param {frozen}{typed(p)}")
    for node in graph.nodes:
        outs = ", ".join(labels[v.id] for v in node.outputs)
        args = ", ".join(labels.get(v.id, f"%<undefined {v.id}>") for v in node.inputs)
        attrs = ", ".join(f"{k}={format_attr(v)}" for k, v in node.attr_items if not isinstance(v, Graph))
        attrs = f" {{{attrs}}}" if attrs else ""
        types = ", ".join(type_of(v) for v in node.outputs)
        origin = f"  # {node.origin}" if node.origin else ""
        lines.append(f"  {outs} = {node.op}({args}){attrs} : {types}{origin}")
        for value in node.attrs.values():
            if isinstance(value, Graph):
                lines.extend("    " + line for line in _lines(value))
    lines.append("  return " + ", ".join(labels.get(v.id, f"%<undefined {v.id}>") for v in graph.outputs))
    lines.append("}")
    return lines
