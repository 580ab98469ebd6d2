"""The rewrite engine: a table of (op name, rule) pairs applied to a fixpoint.

A rule gets a node (its inputs already rewritten) and a Rewriter, and returns
either None (no match) or the values that replace the node's outputs, which it
may build with `rw.emit`. The engine sweeps the graph until no rule fires,
then drops dead nodes. Graphs stay immutable: every sweep builds a new one.
"""

from collections import Counter
from dataclasses import replace
from typing import Callable

from kcomp.errors import GraphError
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.registry import get_op

Rule = Callable[[Node, "Rewriter"], "list[Value] | None"]


class Rewriter:
    """What a rule may ask: who produced a value, how often it is used; and emit new nodes."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self._next_id = 1 + max((v.id for v in _all_values(graph)), default=-1)
        self.nodes: list[Node] = []
        self.producer: dict[int, Node] = {}
        self.uses = Counter(v.id for n in graph.nodes for v in n.inputs) + Counter(v.id for v in graph.outputs)
        self.params = {p.id for p in graph.params}
        self.users = graph.users()  # of the graph being rewritten (the sweep's input)
        self.origin = ""

    def emit(self, op: str, inputs, **attrs) -> list[Value]:
        opdef = get_op(op)
        inputs = tuple(inputs)
        attrs = opdef.resolve_attrs(attrs)
        specs = opdef.infer([v.spec for v in inputs], **attrs)
        outs = []
        for s in specs:
            outs.append(Value(self._next_id, s.shape, s.dtype))
            self._next_id += 1
        self._append(Node(op, inputs, tuple(sorted(attrs.items())), tuple(outs), self.origin))
        return outs

    def emit1(self, op: str, inputs, **attrs) -> Value:
        (out,) = self.emit(op, inputs, **attrs)
        return out

    def _append(self, node: Node) -> None:
        self.nodes.append(node)
        for v in node.outputs:
            self.producer[v.id] = node

    def producer_of(self, v: Value) -> Node | None:
        return self.producer.get(v.id)

    def is_constant(self, v: Value) -> bool:
        node = self.producer_of(v)
        return node is not None and node.op == "constant"

    def constant_value(self, v: Value):
        node = self.producer_of(v)
        return node.attrs["value"] if node is not None and node.op == "constant" else None


def _all_values(graph: Graph):
    yield from graph.inputs
    yield from graph.params
    for n in graph.nodes:
        yield from n.outputs


def rewrite_once(graph: Graph, rules: list[tuple[str, Rule]]) -> tuple[Graph, int]:
    """One sweep over the graph; returns the new graph and how many rules fired."""
    by_op: dict[str, list[Rule]] = {}
    for op, rule in rules:
        by_op.setdefault(op, []).append(rule)
    rw = Rewriter(graph)
    same_as: dict[int, Value] = {}
    fired = 0
    for node in graph.nodes:
        inputs = tuple(same_as.get(v.id, v) for v in node.inputs)
        node = Node(node.op, inputs, node.attr_items, node.outputs, node.origin)
        result = None
        for rule in by_op.get(node.op, ()):
            rw.origin = node.origin
            result = rule(node, rw)
            if result is not None:
                break
        if result is None:
            rw._append(node)
            continue
        fired += 1
        for old, new in zip(node.outputs, result, strict=True):
            if new.id != old.id:
                same_as[old.id] = new
    outputs = tuple(same_as.get(v.id, v) for v in graph.outputs)
    new = replace(graph, nodes=tuple(rw.nodes), outputs=outputs)
    return dead_code_elimination(new), fired


def rewrite_to_fixpoint(graph: Graph, rules: list[tuple[str, Rule]], max_sweeps: int = 50) -> Graph:
    for _ in range(max_sweeps):
        graph, fired = rewrite_once(graph, rules)
        if not fired:
            return graph
    raise AssertionError(f"rewrites did not reach a fixpoint in {max_sweeps} sweeps")


def dead_code_elimination(graph: Graph) -> Graph:
    """Drop nodes none of whose outputs is used (kcomp ops have no side effects)."""
    live = {v.id for v in graph.outputs}
    kept = []
    for node in reversed(graph.nodes):
        if any(v.id in live for v in node.outputs):
            kept.append(node)
            live.update(v.id for v in node.inputs)
    return replace(graph, nodes=tuple(reversed(kept)))


def topological_order(graph: Graph) -> Graph:
    """The graph's nodes reordered so each comes after the producers of its inputs.

    Depth-first from each node in the current order: an already ordered graph
    keeps its order, and a node placed too late moves up to just before its
    first reader.
    """
    producer = {v.id: n for n in graph.nodes for v in n.outputs}
    placed: set[int] = set()
    visiting: set[int] = set()  # nodes on the current depth-first path
    order: list[Node] = []
    for root in graph.nodes:
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if id(node) in placed:
                continue
            if ready:
                visiting.discard(id(node))
                placed.add(id(node))
                order.append(node)
                continue
            if id(node) in visiting:
                raise GraphError(f"graph {graph.name}: a cycle through op {node.op} ({node.origin or 'no layer'})")
            visiting.add(id(node))
            stack.append((node, True))
            for v in reversed(node.inputs):
                p = producer.get(v.id)
                if p is not None and id(p) not in placed:
                    stack.append((p, False))
    return replace(graph, nodes=tuple(order))
