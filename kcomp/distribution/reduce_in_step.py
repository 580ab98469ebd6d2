"""A data-parallel training step as one graph, its sums over the job inside it (the fused plan's).

On the reference executor a data-parallel step runs its graph cut at the gradients, the
all-reduces between the two halves (kcomp.distribution.step_runner). The fused plan (the triton
backends) runs one graph, captured whole on a GPU, so there the sums go into the graph itself,
as all_reduce nodes (kcomp/ir/ops/collective.py) that the plan runs over the process group:

  inputs    the step's own, then three float32 scalars each process sets per batch:
              share      its rows / the global batch's rows (0: an empty shard)
              present    1.0, or 0.0 for an empty shard
              inv_share  1 / share, or 0.0 for an empty shard
  gradients as the update reads them, each the job's sum of gradient * share, in flat buckets of
            at most `cap_bytes` (PyTorch DDP's rule, kcomp.distribution.collectives.buckets), one
            all_reduce per bucket right after the node that computes its last gradient (the last
            layer's first). A node the gradients are computed from still reads this process's own
            gradient (a batch normalization's beta gradient is a term of its input's).
  replica_sum (a synchronized BatchNormalization) an all_reduce weighed as the reference step
            weighs it (kcomp.distribution.backward_run): statistics times present; gradients
            times share, and the sum times inv_share.

With Keras's default loss reduction (the mean over the batch) the summed gradients are those of
the whole global batch's loss, as one process computes them.
"""

from dataclasses import replace

import torch

from kcomp.distribution.collectives import buckets
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.types import TORCH_DTYPES
from kcomp.passes.rewrite import Rewriter

SHARE_INPUTS = ("share", "present", "inv_share")
GRADIENT_SUMS = "data-parallel gradient sums"  # the origin of the gradients' all_reduce nodes (and their weighing)


class _Emitter(Rewriter):
    """A Rewriter that also copies the graph's own nodes, their inputs renamed."""

    def copy(self, node: Node, renamed: dict[int, Value]) -> None:
        inputs = tuple(renamed.get(v.id, v) for v in node.inputs)
        self._append(Node(node.op, inputs, node.attr_items, node.outputs, node.origin))

    def new_input(self, name: str) -> Value:
        value = Value(self._next_id, (), "float32", name)
        self._next_id += 1
        return value


def _feeding_gradients(graph: Graph, gradient_ids: set[int]) -> set[int]:
    """ids of the nodes the gradients are computed from (as kcomp.distribution.split_step finds them)."""
    feeding, reads = set(), set(gradient_ids)
    for node in reversed(graph.nodes):
        if any(v.id in reads for v in node.outputs):
            feeding.add(id(node))
            reads.update(v.id for v in node.inputs)
    return feeding


def summed_in_step(graph: Graph, gradients: list[Value], cap_bytes: float) -> Graph:
    """`graph` (a training step whose optimizer reads `gradients`) with the job's sums in it."""
    rw = _Emitter(graph)
    share, present, inv_share = (rw.new_input(name) for name in SHARE_INPUTS)
    gradient_ids = {g.id for g in gradients}
    feeding = _feeding_gradients(graph, gradient_ids)
    made_at = {v.id: i for i, node in enumerate(graph.nodes) for v in node.outputs}  # inputs, params: -1
    ready = [made_at.get(g.id, -1) for g in gradients]
    order = sorted(range(len(gradients)), key=lambda i: ready[i])
    like = [torch.empty(g.shape, dtype=TORCH_DTYPES[g.dtype], device="meta") for g in gradients]  # weights': static
    groups = buckets(like, order, cap_bytes)
    after: dict[int, list[list[int]]] = {}
    for members in groups:
        after.setdefault(max(ready[i] for i in members), []).append(members)

    summed: dict[int, Value] = {}  # gradient id -> the job's sum, which the update reads

    def reduce(members):
        rw.origin = GRADIENT_SUMS
        weighed = [rw.emit1("mul", [gradients[i], share]) for i in members]
        for i, total in zip(members, rw.emit("all_reduce", weighed), strict=True):
            summed[gradients[i].id] = total

    for members in after.get(-1, []):
        reduce(members)
    replaced: dict[int, Value] = {}  # a replica_sum's outputs -> its all_reduce's
    for index, node in enumerate(graph.nodes):
        if node.op == "replica_sum":
            rw.origin = node.origin
            weight = share if node.attrs["cotangent"] else present
            totals = rw.emit("all_reduce", [rw.emit1("mul", [replaced.get(v.id, v), weight]) for v in node.inputs])
            if node.attrs["cotangent"]:
                totals = [rw.emit1("mul", [t, inv_share]) for t in totals]
            replaced.update({old.id: new for old, new in zip(node.outputs, totals, strict=True)})
        else:
            reads_sums = id(node) not in feeding and any(v.id in gradient_ids for v in node.inputs)
            if reads_sums and any(v.id in gradient_ids and v.id not in summed for v in node.inputs):
                raise AssertionError(f"{node.op} reads a gradient before its bucket is complete")
            rw.copy(node, {**replaced, **summed} if reads_sums else replaced)
        for members in after.get(index, []):
            reduce(members)
    outputs = tuple(replaced.get(v.id, v) for v in graph.outputs)
    return replace(graph, name=f"{graph.name}/data-parallel", inputs=(*graph.inputs, share, present, inv_share),
                   nodes=tuple(rw.nodes), outputs=outputs)
