"""A training step graph cut in two at its gradients: what a data-parallel step reduces between.

The step is one graph (forward, loss, backward, optimizer update, running sums). Data
parallelism needs one thing in its middle: the gradients summed over the processes before
the optimizer reads them. `split_at` cuts the graph there, without changing a node:

  backward  every node the gradients are computed from (a gradient may feed another: a batch
            normalization's beta gradient is a term of its input's), and every node that does not
            read a gradient (forward, loss, metrics, running sums, moving statistics); outputs the
            gradients first, then every other value the update reads or the step returns
  update    every other node that reads a gradient, directly or through another such node
            (clipping, the optimizer); its inputs are the backward's outputs, in that order

Running backward, replacing its first outputs by the reduced gradients and running update
gives the step's outputs, in the step's order. The two pieces share the step's Values (the
interpreter keys them by id), so they are not re-verified: the update's inputs are node results,
which carry no names.
"""

from dataclasses import dataclass

from kcomp.ir.graph import Graph, Value


@dataclass(frozen=True)
class SplitStep:
    backward: Graph
    update: Graph
    gradients: int  # the backward's first outputs that are the gradients


def _params_read(graph: Graph, nodes, returned=()) -> tuple[Value, ...]:
    """The graph's params that `nodes` read or that are `returned` as they are, in graph order."""
    read = {v.id for node in nodes for v in node.inputs} | {v.id for v in returned}
    return tuple(p for p in graph.params if p.id in read)


def split_at(graph: Graph, gradients: list[Value]) -> SplitStep:
    gradient_ids = {g.id for g in gradients}
    feeds_gradients, reads = set(), set(gradient_ids)
    for node in reversed(graph.nodes):
        if any(v.id in reads for v in node.outputs):
            feeds_gradients.add(id(node))
            reads.update(v.id for v in node.inputs)
    tainted = set(gradient_ids)
    backward, update = [], []
    for node in graph.nodes:
        if id(node) not in feeds_gradients and any(v.id in tainted for v in node.inputs):
            update.append(node)
            tainted.update(v.id for v in node.outputs)
        else:
            backward.append(node)
    made_by_update = {v.id for node in update for v in node.outputs}
    param_ids = {p.id for p in graph.params}
    carried, seen = list(gradients), {g.id for g in gradients}
    for v in [*(v for node in update for v in node.inputs), *graph.outputs]:
        if v.id not in seen and v.id not in made_by_update and v.id not in param_ids:
            carried.append(v)
            seen.add(v.id)
    frozen = graph.frozen_params
    first = Graph(f"{graph.name}/backward", graph.inputs, _params_read(graph, backward), tuple(backward),
                  tuple(carried), frozen, graph.kind)
    second = Graph(f"{graph.name}/update", tuple(carried), _params_read(graph, update, graph.outputs), tuple(update),
                   graph.outputs, frozen, graph.kind)
    return SplitStep(first, second, len(gradients))
