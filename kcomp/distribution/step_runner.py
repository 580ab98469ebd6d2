"""A step run data-parallel: each process runs the same step graph on its shard of the global batch.

The training step is cut at its gradients (kcomp.distribution.split_step): this process runs the
backward on its rows, its gradients weighed by its share of the batch (rows here / rows in all)
are summed over the processes in flat buckets, each bucket's all-reduce started as soon as the
backward has computed its last gradient (kcomp.distribution.backward_run), and the update then
runs the one optimizer on the same summed gradients everywhere, so the weights stay identical.
With Keras's default loss reduction (the mean over the batch) this is the gradient of the loss of
the whole global batch, as one process would compute it. The running sums of the loss and the
metrics ride in the gradients' buckets, so the logs any callback reads, on any process, are the
whole job's. A BatchNormalization(synchronized=True) sums its statistics, and their gradients,
over the processes inside the backward (replica_sum nodes); one with synchronized=False (Keras's
default) normalizes by this process's rows and keeps its own moving statistics, which then differ
between the processes (process 0's are the ones saved).

Random ops (Dropout) draw their masks from (seed, step number, element): each process other than
process 0 draws with seeds derived from its rank, so the processes drop different units, as
independent replicas do.

A process whose shard is empty (a last partial batch with fewer rows than processes) runs the step
on the batch's first row with a weight of zero for its gradients, adds nothing to a synchronized
BatchNormalization's sums, and keeps its running sums and its own moving statistics as they were:
it still joins the collectives, as every process must.

DataParallelStep runs the step on the reference executor (op by op on torch); on the triton
backends FusedDataParallelStep (kcomp/distribution/fused_step.py) runs the fused plan with the
sums inside the step graph. ShardedStep is what both do around the step.
"""

import dataclasses

import torch

from kcomp.distribution.backward_run import BackwardRun
from kcomp.distribution.split_step import split_at
from kcomp.errors import KcompError
from kcomp.ir.graph import Graph
from kcomp.random import derived_seed
from kcomp.runtime.reference import ReferenceRun
from kcomp.training.state import ITERATIONS, TrainState


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """This process's contiguous share [start, stop) of n rows: the first n % world processes
    take one row more, as torch.tensor_split shares them."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def check_supported(model, compiled, world: int) -> None:
    """What a data-parallel step cannot do as one process would, refused before the first step:
    weighing each process's gradients by its rows is exact for a mean over the batch only."""
    for loss in compiled.losses:
        if loss is not None and loss.reduction not in ("sum_over_batch_size", "mean"):
            raise KcompError(f"Data-parallel training sums each process's gradients weighed by its share of the "
                             f"batch, which matches one process only for a loss averaged over the batch; the loss "
                             f"{loss.name} has reduction={loss.reduction!r}. Use reduction='sum_over_batch_size' "
                             "(Keras's default), or train in one process.")


RANK_STRIDE = 1 << 20  # derived seeds of process r: calls r * RANK_STRIDE + ..., clear of a layer's call numbers


def seeded_for_process(graph: Graph, rank: int) -> Graph:
    """`graph` with every random op's seed derived from `rank` (process 0's unchanged). A random op's
    backward carries the same seed attribute as its forward, so both still draw one mask."""
    if rank == 0:
        return graph
    nodes = tuple(
        dataclasses.replace(node, attr_items=tuple((k, derived_seed(v, rank * RANK_STRIDE) if k == "seed" else v)
                                                   for k, v in node.attr_items))
        if "seed" in node.attrs else node
        for node in graph.nodes)
    return dataclasses.replace(graph, nodes=nodes)


class ShardedStep:
    """What every data-parallel StepRunner (kcomp.training.runners) does around its step: the first
    step's checks and broadcast, this process's shard of each batch, what an empty shard keeps, and
    the job's running sums for the logs. A subclass runs the step on the shard (`_run_shard`)."""

    def __init__(self, step, distribution, shared=()):
        """shared: state names every process updates alike, an empty shard too (the moving statistics
        of a synchronized BatchNormalization, which are the job's)."""
        # The distribution it serves (kcomp.training.runners.runner_for makes a new runner when it changes).
        self.distribution, self.group = distribution, distribution.group
        self.writes = step.writes
        self.sums = [name for name, _, _ in step.accumulators]
        if step.gradients and step.masked_losses:
            raise KcompError(f"Data-parallel training weighs each process's gradients by its share of the batch's "
                             f"samples, but the loss of output(s) {step.masked_losses} is averaged over the unmasked "
                             "steps of a Keras mask, whose count differs between the shares, so the sum would not be "
                             "one process's gradient. Train this model in one process.")
        self.graph = seeded_for_process(step.graph, self.group.rank)
        self.started = False
        # What an empty shard must leave as it was: every write but the weights, slots and step count.
        updated = set(step.writes[: len(step.gradients)])
        self.kept_when_empty = [w for w in step.writes
                                if w not in updated and w not in shared and not w.startswith("optimizer/")]

    def run(self, data: list[torch.Tensor], learning_rate: float, rows, state: TrainState) -> None:
        if not self.started:
            self._start(data, state)
            self.started = True
        n = len(rows) if rows is not None else len(data[-1])
        start, stop = shard(n, self.group.rank, self.group.world)
        empty = start == stop
        local = slice(0, 1) if empty else slice(start, stop)  # empty: the batch's first row, weighed 0
        data = [t[rows[local]] for t in data] if rows is not None else [t[local] for t in data]
        # (copies: a fused step updates the state's buffers in place)
        kept = {name: t.clone() for name, t in state.read(self.kept_when_empty).items()} if empty else None
        summed = self._run_shard(data, learning_rate, 0.0 if empty else (stop - start) / n, kept, state)
        # The job's running sums, for the logs; this process's own stay in the state, which its steps add to.
        state.job_sums.update(zip(self.sums, summed, strict=True))

    def _run_shard(self, data, learning_rate: float, share: float, kept, state: TrainState) -> list[torch.Tensor]:
        """Run the step on this process's rows (`share` of the batch; 0: an empty shard running the
        batch's first row, whose `kept` state it puts back); the job's running sums."""
        raise NotImplementedError

    def _start(self, data, state: TrainState) -> None:
        """At the first step: every process must hold the same model and data shapes (checked, naming
        the processes that differ), and then holds process 0's weights, slots and step count."""
        names = [p.name for p in self.graph.params if not p.name.startswith("accumulator/") and p.name != ITERATIONS]
        # (the optimizer's slots mirror the weights: the message shows the weights only)
        weights = [f"{name} {tuple(state[name].shape)}" for name in names if not name.startswith("optimizer/")]
        shapes = [f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in data]
        self.group.check_same(f"weights [{', '.join(weights)}], data [{', '.join(shapes)}]", "model weights and data shapes",
                              "Start every process with the same model and data of the same shapes.")
        state.write(names, self.group.broadcast([state[name] for name in names], "broadcasting process 0's weights"))
        count = torch.tensor([state.optimizer.iterations], dtype=torch.int64)
        state.optimizer.iterations = int(self.group.broadcast([count], "broadcasting process 0's step count")[0])
        state.before_train_step()  # the device-side count follows the host's



class DataParallelStep(ShardedStep):
    """The step on the reference executor, cut at its gradients (kcomp.distribution.split_step)."""

    def __init__(self, step, distribution, shared=()):
        super().__init__(step, distribution, shared)
        self.split = split_at(self.graph, step.gradients) if step.gradients else None  # None: a test step
        # Each graph scheduled once, run every batch (as kcomp.training.runners.ReferenceStep does).
        if self.split is None:
            self._run_whole = ReferenceRun(self.graph)
        else:
            # where the backward leaves each running sum among its outputs (the gradients come first)
            made = {step.writes[i]: v.id for i, v in enumerate(self.graph.outputs)}
            position = {v.id: i for i, v in enumerate(self.split.backward.outputs)}
            k = self.split.gradients
            self._run_backward = BackwardRun(self.split.backward, [*range(k), *(position[made[n]] for n in self.sums)],
                                             [*step.writes[:k], *self.sums], self.group, distribution.bucket_bytes)
            self._run_update = ReferenceRun(self.split.update)

    def _run_shard(self, data, learning_rate: float, share: float, kept, state: TrainState) -> list[torch.Tensor]:
        inputs = [*data, torch.tensor(learning_rate, dtype=torch.float32)]
        if self.split is not None:
            return self._train(inputs, share, kept, state)
        state.write(self.writes, self._run_whole(inputs, state.read(p.name for p in self.graph.params)))
        if kept is not None:
            state.write(kept.keys(), kept.values())
        return self.group.all_reduce_flat([state[name] for name in self.sums], "summing the logged values")

    def _train(self, inputs, share: float, kept, state: TrainState) -> list[torch.Tensor]:
        """Backward with the all-reduces of the weighed gradients and this process's running sums
        started in it (the backward computes the sums: they ride in the same buckets), update.
        The summed running sums."""
        backward, update, k = self.split.backward, self.split.update, self.split.gradients

        def weigh(i, tensor):  # what this process adds to the sum of the i-th reduced tensor
            if i < k:
                return tensor * share
            return kept[self.sums[i - k]] if kept is not None else tensor

        carried, summed = self._run_backward(inputs, state.read(p.name for p in backward.params), share, weigh)
        carried[:k] = summed[:k]
        state.write(self.writes, self._run_update(carried, state.read(p.name for p in update.params)))
        if kept is not None:
            state.write(kept.keys(), kept.values())
        return summed[k:]

    @property
    def events(self) -> list[tuple]:
        """What the last training step did, in order (kcomp.distribution.backward_run.BackwardRun)."""
        return self._run_backward.events if self.split is not None else []
