"""The backward of a data-parallel step as this process runs it: the reference executor's schedule
of the backward graph (kcomp.runtime.reference.schedule) with the job's collectives put in it.

- Each replica_sum node (kcomp/ir/ops/collective.py: a synchronized BatchNormalization's sums)
  runs as an all-reduce where it stands: the forward's sums of the statistics, the backward's
  sums of their gradients.
- The tensors the step reduces after the backward (the gradients, and the running sums the logs
  read) go in flat buckets filled in the order the schedule computes them (the last layer's
  gradients first), and each bucket's all-reduce starts, asynchronously, right after the step
  that computes its last tensor, while the rest of the backward runs; the run waits for them all
  at its end, before the optimizer's update. Buckets close at `cap_bytes` (PyTorch DDP's rule).

Every process runs the same schedule, so the collectives start in the same order everywhere.
`events` records the last run's order of what happened: ("ready", name) after the step that
computes a reduced tensor, ("start", bucket) when a bucket's all-reduce starts, ("replica_sum",
"statistics" or "gradients") when one runs, then ("backward done", [whether each started
bucket's all-reduce had finished by then]) and ("waited",).
"""

import torch

from kcomp.distribution.collectives import buckets, flatten, unflatten
from kcomp.ir.graph import Graph
from kcomp.ir.interpret import run_steps
from kcomp.ir.registry import OPS
from kcomp.ir.types import TORCH_DTYPES
from kcomp.runtime.reference import schedule


class BackwardRun:
    """`graph`'s outputs, and the sum over the job of its outputs at `reduced` (positions), each as
    this process weighs it (`weigh` of a run)."""

    def __init__(self, graph: Graph, reduced: list[int], names: list[str], group, cap_bytes: float):
        self.graph, self.group, self.names = graph, group, names
        self.reduced = [graph.outputs[i] for i in reduced]
        self.events: list[tuple] = []
        self.buckets_run = self.buckets_finished_in_backward = 0  # over every run: how much the overlap hid
        self.share, self.empty, self.weigh = 1.0, False, None  # set by each run
        steps = [(self._replica_sum, ins, attrs, outs) if fn is OPS["replica_sum"].reference else (fn, ins, attrs, outs)
                 for fn, ins, attrs, outs in schedule(graph)]
        made_at = {v.id: i for i, (_, _, _, outs) in enumerate(steps) for v in outs}  # inputs, params: -1
        ready = [made_at.get(v.id, -1) for v in self.reduced]
        order = sorted(range(len(self.reduced)), key=lambda i: ready[i])  # stable: output order among ties
        # Their shapes and dtypes, for the buckets (weights' gradients and running sums: static shapes).
        self._like = [torch.empty(v.shape, dtype=TORCH_DTYPES[v.dtype], device="meta") for v in self.reduced]
        self.buckets = buckets(self._like, order, cap_bytes)
        after: dict[int, list] = {}  # step index -> what runs right after it
        for i in order:
            after.setdefault(ready[i], []).append(self._marker(("ready", names[i])))
        for b, members in enumerate(self.buckets):
            last = max(ready[i] for i in members)
            after.setdefault(last, []).append((self._starter(b, members), tuple(self.reduced[i] for i in members), {}, ()))
        self.steps = list(after.get(-1, []))
        for i, step in enumerate(steps):
            self.steps += [step, *after.get(i, [])]

    def __call__(self, inputs, params, share: float, weigh):
        """Run the backward; (its outputs, the reduced tensors summed over the job). `share`: this
        process's part of the batch (0: an empty shard); weigh(i, tensor): what this process adds
        to the sum of reduced tensor i."""
        self.share, self.empty, self.weigh = share, share == 0.0, weigh
        self.events, self._started = [], []
        outputs = run_steps(self.graph, self.steps, inputs, params)
        # which buckets' all-reduces had already finished, behind the backward's computing
        finished = [work is None or work.is_completed() for _, _, work in self._started]
        self.events.append(("backward done", finished))
        self.buckets_run += len(finished)
        self.buckets_finished_in_backward += sum(finished)
        self.group.wait([work for _, _, work in self._started], "summing the gradients and the logged values")
        self.events.append(("waited",))
        summed = [None] * len(self.reduced)
        for members, flat, _ in self._started:
            for i, piece in zip(members, unflatten(flat, [self._like[i] for i in members]), strict=True):
                summed[i] = piece
        return outputs, summed

    def _marker(self, event):
        def mark():
            self.events.append(event)
            return ()
        return mark, (), {}, ()

    def _starter(self, b: int, members: list[int]):
        def start(*tensors):
            flat = flatten([self.weigh(i, t) for i, t in zip(members, tensors, strict=True)])
            self._started.append((members, flat, self.group.start_sum(flat, "summing the gradients and the logged values")))
            self.events.append(("start", b))
            return ()
        return start

    def _replica_sum(self, *xs, cotangent):
        """The sums over the job a replica_sum node stands for. Statistics: an empty shard (which runs
        the batch's first row) adds nothing. Gradients (cotangent): this process's backward is of
        its own rows' loss, whose gradients the step weighs by its share at the end; so each
        process adds its gradient times its share, and takes the sum divided by its share, which
        the end multiplies back (an empty shard, weighed 0, takes zeros)."""
        self.events.append(("replica_sum", "gradients" if cotangent else "statistics"))
        weight = self.share if cotangent else (0.0 if self.empty else 1.0)
        what = "summing a synchronized BatchNormalization's " + ("gradients" if cotangent else "statistics")
        summed = self.group.all_reduce_flat([x * weight for x in xs], what)
        if not cotangent:
            return tuple(summed)
        return tuple(torch.zeros_like(s) if self.empty else s / self.share for s in summed)
