"""A data-parallel step on the fused plan of generated kernels (the triton backends).

The step graph gets its sums over the job inside it (kcomp/distribution/reduce_in_step.py: the
gradients' buckets and a synchronized BatchNormalization's sums as all_reduce nodes), is fused and
planned as a one-process step is, and runs as DeviceStep runs one (kcomp.training.device_step):
the state in device buffers updated in place, on a GPU one CUDA graph per batch shape with the
all-reduces captured in it (NCCL's collectives can be captured; the first run of each shape runs
uncaptured, which sets up the communicator before the capture). The plan starts each all_reduce
node as one flat all-reduce over the job's process group where the node stands (after the kernel
that computes its bucket's last gradient) and waits for it only before the first kernel that reads
its sums (the optimizer update): the backward's kernels between the two run while it sums, as the
reference executor's buckets do (Plan.overlaps counts them).

ShardedStep (kcomp.distribution.step_runner) does the rest as for the reference executor: the
first step's checks and broadcast of process 0's weights, the shards, an empty shard's kept state,
the running sums the logs read.
"""

import torch

from kcomp.distribution.reduce_in_step import GRADIENT_SUMS, summed_in_step
from kcomp.distribution.step_runner import ShardedStep
from kcomp.training.state import TrainState


class _Writes:
    """What DeviceStep reads of a Step: the state each output is written to."""

    def __init__(self, writes):
        self.writes = writes


class FusedDataParallelStep(ShardedStep):
    def __init__(self, step, distribution, shared, model):
        from kcomp.passes import run_pipeline
        from kcomp.runtime import cuda_graphs
        from kcomp.runtime.plan import Plan
        from kcomp.training.device_step import DeviceStep
        from kcomp.training.runners import device_of

        super().__init__(step, distribution, shared)
        self.graph = summed_in_step(self.graph, step.gradients, distribution.bucket_bytes)
        fused, _ = run_pipeline(self.graph)
        self.plan = Plan(fused, model._precision, collective=self._all_reduce)
        self._device_step = DeviceStep(_Writes(step.writes), self.plan, cuda_graphs.graphs_for(device_of(model)))
        self.all_reduces = 0  # run by the plan so far (what a test reads)

    @property
    def events(self) -> list:
        """Per all_reduce of the plan's last run, in order: ["overlap", k, the instructions (kernels
        and torch ops) run between its start and the first read of its sums]."""
        return [["overlap", k, n] for k, n in enumerate(self.plan.overlaps)]

    def _all_reduce(self, node, tensors: list[torch.Tensor]):
        self.all_reduces += 1
        what = ("summing the gradients" if node.origin == GRADIENT_SUMS else
                "summing a synchronized BatchNormalization's statistics or their gradients")
        return self.group.start_sum_as_one(tensors, what)

    def _run_shard(self, data, learning_rate: float, share: float, kept, state: TrainState) -> list[torch.Tensor]:
        empty = share == 0.0
        weights = [share, 0.0 if empty else 1.0, 0.0 if empty else 1.0 / share]  # share, present, inv_share
        self._device_step.run_inputs([*data, learning_rate, *weights], None, state)
        if kept is not None:
            state.write(kept.keys(), kept.values())  # copied into the buffers at the next step
        return self.group.all_reduce_flat([state[name] for name in self.sums], "summing the logged values")
