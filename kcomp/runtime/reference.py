"""The reference executor: each IR node runs its registry torch implementation.

It is the oracle every compiled kernel is checked against, and the default on
a machine without a GPU. It is the IR's own interpreter (kcomp.ir.interpret), run
on a schedule that changes how the graph's values are computed, never what:

- only the nodes whose outputs reach the graph's outputs run (autodiff leaves, for
  one, the gradient of the input image that nothing reads);
- a pair of nodes listed in FUSIONS runs as one torch call where the graph has both, and
  dropouts that draw the same mask draw it once (kcomp/runtime/reference_fusions.py);
- a Dense matmul and its bias run as one addmm (float32, float64), and a matmul with 2 to 10
  output columns in the layout MKL computes fast on a CPU (kcomp/runtime/dense_products.py): the
  same sums, rounded in another order;
- relu and the mask products write over an input nothing else reads (in_place_where_dead), and a
  training step's optimizer update over the weights and slots its runner replaces anyway;
- each value is let go of after its last reader (ReferenceRun.release), as autograd frees what it
  no longer needs.

A ReferenceRun runs its schedule as generated straight-line Python (kcomp/runtime/straight_line.py;
`run.code.source` is the code), not through the interpreter's loop: the same calls, less overhead.
"""

import itertools

from kcomp.ir import saved_forwards
from kcomp.ir.graph import Graph
from kcomp.ir.registry import OPS
from kcomp.passes.rewrite import dead_code_elimination
from kcomp.runtime.dense_products import is_narrow, narrow_matmul
from kcomp.runtime.reference_fusions import (FUSIONS, in_place_where_dead, share_dropout_masks,
                                             update_in_place_where_donated)
from kcomp.runtime.straight_line import StraightLine


def _place(nodes, i: int, j: int, step, readers: dict[int, set[int]], defined_at: dict[int, int], outputs):
    """Where fused `step` of nodes i < j can run (i or j), or None."""
    produced = {v.id for v in step[3]}
    for v in (*nodes[i].outputs, *nodes[j].outputs):
        if v.id not in produced and (v.id in outputs or readers.get(v.id, set()) - {i, j}):
            return None
    if all(readers.get(v.id, set()) <= {j} and v.id not in outputs for v in nodes[i].outputs):
        return j
    if all(defined_at.get(v.id, -1) < i for v in nodes[j].inputs):
        return i
    return None


def _step_function(node):
    """The torch function that computes `node` alone: its op's reference, or narrow_matmul."""
    if node.op == "matmul" and is_narrow(*node.inputs):
        return narrow_matmul
    return OPS[node.op].reference


def schedule(graph: Graph, donated: dict[int, str] | None = None) -> list[tuple]:
    """The (function, input values, attrs, output values) steps that compute `graph`'s outputs.
    donated: output position -> the parameter the caller replaces with that output (a training
    step's runner): the optimizer update may then write over those parameters."""
    nodes = list(dead_code_elimination(graph).nodes)
    defined_at = {v.id: i for i, node in enumerate(nodes) for v in node.outputs}  # graph inputs: absent, so -1
    readers: dict[int, set[int]] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            readers.setdefault(v.id, set()).add(i)
    outputs = {v.id for v in graph.outputs}
    fused: dict[int, tuple] = {}  # place -> fused step
    taken: set[int] = set()  # indices of the nodes a fused step computes
    for first_op, second_op, match in FUSIONS:
        for i, first in enumerate(nodes):
            if first.op != first_op or i in taken:
                continue
            for j in range(i + 1, len(nodes)):
                if nodes[j].op != second_op or j in taken:
                    continue
                step = match(first, nodes[j])
                place = None if step is None else _place(nodes, i, j, step, readers, defined_at, outputs)
                if place is not None:
                    fused[place] = step
                    taken.update((i, j))
                    break
    steps = [fused[i] if i in fused else (_step_function(node), node.inputs, node.attrs, node.outputs)
             for i, node in enumerate(nodes) if i in fused or i not in taken]
    values = [v.id for v in (*graph.inputs, *graph.params)] + [v.id for node in nodes for v in (*node.inputs, *node.outputs)]
    fresh = itertools.count(max(values, default=0) + 1)  # ids for the values the steps add (a shared mask)
    steps = in_place_where_dead(share_dropout_masks(steps, lambda: next(fresh)), graph)
    return update_in_place_where_donated(steps, graph, donated or {})


def releases(graph: Graph, steps) -> list[list[int]]:
    """Per step, the values that die there: read last by it (or, read by nothing, made by it) and
    not a graph output. A run that drops them frees each activation and gradient as soon as it is
    dead, as PyTorch's autograd does, rather than at the step's end: a smaller heap, fewer fresh
    pages for the allocator to fault in at the next step."""
    last: dict[int, int] = {}
    for k, (_, ins, _, outs) in enumerate(steps):
        for v in (*ins, *outs):
            last[v.id] = k
    for v in (*graph.inputs, *graph.params, *graph.outputs):
        last.pop(v.id, None)  # the caller's tensors and the results: never dropped
    dying: list[list[int]] = [[] for _ in steps]
    for vid, k in last.items():
        dying[k].append(vid)
    return dying


class ReferenceRun:
    """A graph and its schedule, made once: what a step or predict runs every batch. donated: output
    position -> the parameter that output replaces in the caller's state (schedule)."""

    def __init__(self, graph: Graph, donated: dict[int, str] | None = None):
        self.graph = graph
        self.steps = schedule(graph, donated)
        self.release = releases(graph, self.steps)
        self.taped = saved_forwards.forwards_with_backward(graph.nodes)  # (a pass over the nodes: once, not per run)
        self.code = StraightLine(graph, self.steps, self.release)  # the steps as code: no interpreter loop per run

    def __call__(self, inputs, params):
        if not self.taped:
            return self.code(inputs, params)
        with saved_forwards.for_run(self.taped):
            return self.code(inputs, params)


def run_reference(graph: Graph, inputs, params):
    """Run `graph` once on the reference executor (a caller that runs it again keeps a ReferenceRun)."""
    return ReferenceRun(graph)(inputs, params)
