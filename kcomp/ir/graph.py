"""The graph IR: immutable nodes over SSA values.

A Graph has data inputs, parameters (weights, named by their layer path such as
"dense/kernel"), nodes in topological order, and outputs. Nothing here is ever
mutated: a pass builds and returns a new Graph.
"""

from dataclasses import dataclass, field
from typing import Any

from kcomp.ir.types import Shape, TensorSpec


@dataclass(frozen=True)
class Value:
    """An SSA value: defined once, by a node or as a graph input or parameter."""

    id: int
    shape: Shape
    dtype: str
    name: str = ""  # inputs and parameters carry names; node results print as %id

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.shape, self.dtype)

    @property
    def label(self) -> str:
        return f"%{self.name}" if self.name else f"%{self.id}"


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[Value, ...]
    attr_items: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs: hashable
    outputs: tuple[Value, ...]
    origin: str = ""  # the layer (or pass) that produced the node, for reports

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.attr_items)

    @property
    def output(self) -> Value:
        assert len(self.outputs) == 1, f"{self.op} has {len(self.outputs)} outputs"
        return self.outputs[0]


GRAPH_KINDS = ("forward", "step")


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[Value, ...]
    params: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    # Value ids of `params` that training must not update (BatchNorm's moving
    # statistics); kept in the graph so every stage sees the same split.
    frozen_params: frozenset[int] = field(default_factory=frozenset)
    # "forward": a model's forward, whose weight-only values are computed once per set of weights
    # (hoisted). "step": a training or test step, run whole every time (its weights change every
    # step): nothing is hoisted, and weight-only values fuse like the rest. Every pass keeps it.
    kind: str = "forward"

    def __post_init__(self):
        if self.kind not in GRAPH_KINDS:
            raise ValueError(f"Graph kind {self.kind!r}; expected one of {GRAPH_KINDS}")

    def producers(self) -> dict[int, Node]:
        """Value id -> the node that defines it."""
        return {v.id: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[int, list[Node]]:
        """Value id -> the nodes that read it, in order."""
        out: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v.id, []).append(n)
        return out

    def param(self, name: str) -> Value:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)
