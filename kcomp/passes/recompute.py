"""recompute: give each reader of a cheap elementwise value its own copy of the op computing it.

A value with several readers is a kernel output of its own: the fuser's chains follow single-use
values only. For a few flops per element that costs a launch and a trip through memory, and a
loss is made of such values (binary cross-entropy's clipped probability is read by two logs and
by two gradient masks: nine tiny pointwise kernels). Copied into each reader, the value is
computed inline by each reader's kernel instead.

The rule, bounded: a node is copied into its readers when
  - it is pointwise as the fuser counts it (Fusion.is_pointwise: elementwise with a Triton
    expression, float, not computed from weights alone) and draws no random numbers (dropout's
    mask follows the element index of its own output, which a broadcasting reader does not share);
  - the graph does not return its value, and it has 2 to MAX_READERS readers, each of them
    pointwise too (a reduction, a matmul or any other template reading it keeps it a kernel, so a
    copy would only add work).
Readers are visited before producers (reverse graph order), so a chain of such values is copied
whole into each reader of its last value. Nothing else is ever copied: no reduction, no matmul,
no op without a Triton expression. The fusion pass keeps the copies only where the graph then
fuses into fewer launches (kcomp/passes/fuse.py: fewest_launches).
"""

from dataclasses import replace
from typing import Callable

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.registry import OPS

MAX_READERS = 8  # a copy per reader: bounds the extra work of a value read by many (and of chains of them)


def _uses(node: Node, v: Value) -> bool:
    return any(x.id == v.id for x in node.inputs)


def recompute(graph: Graph, is_pointwise: Callable[[Node], bool]) -> Graph:
    """`graph` with the cheap elementwise values copied into their readers (the rule above);
    `graph` itself when nothing is copied."""
    nodes = list(graph.nodes)
    returned = {v.id for v in graph.outputs}
    next_id = 1 + max((v.id for v in (*graph.inputs, *graph.params, *(o for n in nodes for o in n.outputs))), default=-1)

    def copyable(node: Node) -> bool:
        return len(node.outputs) == 1 and "random" not in OPS[node.op].traits and is_pointwise(node)

    copied = False
    for i in range(len(nodes) - 1, -1, -1):
        node = nodes[i]
        out = node.outputs[0]
        readers = [j for j in range(i + 1, len(nodes)) if _uses(nodes[j], out)]
        if not copyable(node) or out.id in returned or not 2 <= len(readers) <= MAX_READERS:
            continue
        if not all(copyable(nodes[j]) for j in readers):
            continue
        copies: dict[int, Node] = {}  # reader's index -> the copy placed just before it
        for j in readers:
            mine = Value(next_id, out.shape, out.dtype)
            next_id += 1
            copies[j] = Node(node.op, node.inputs, node.attr_items, (mine,), node.origin)
            inputs = tuple(mine if x.id == out.id else x for x in nodes[j].inputs)
            nodes[j] = Node(nodes[j].op, inputs, nodes[j].attr_items, nodes[j].outputs, nodes[j].origin)
        placed = []
        for j, n in enumerate(nodes):
            if j in copies:
                placed.append(copies[j])
            if j != i:
                placed.append(n)
        nodes = placed
        copied = True
    return replace(graph, nodes=tuple(nodes)) if copied else graph
