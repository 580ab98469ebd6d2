"""What runs a step graph on a batch: the StepRunner protocol and how a model picks its runner.

Every runner takes the batch and the learning rate and leaves the step's new state in the
TrainState (kcomp.training.state); the loop around it does not know which one runs.

  DataParallelStep  the step on this process's shard of the batch in a data-parallel job
                  (kcomp.distribution.step_runner)
  ReferenceStep   op by op on torch (backend "reference"): reads the state, writes the new values back
  DeviceStep      the fused plan of generated kernels (the triton backends): the state in device
                  buffers the step updates in place, on a GPU one CUDA graph per batch shape
                  (kcomp.training.device_step)
"""

from typing import Protocol

import torch

from kcomp import distribution
from kcomp.runtime.reference import ReferenceRun
from kcomp.training.state import TrainState


class StepRunner(Protocol):
    def run(self, data: list[torch.Tensor], learning_rate: float, rows: torch.Tensor | None,
            state: TrainState) -> None:
        """One step. `data` is the step graph's inputs before the learning rate (the model's inputs,
        the targets, the sample weights): the batch itself, or with `rows` (an index tensor on
        their device) whole data sets of which the batch is those rows."""


class ReferenceStep:
    """A step graph run op by op with the torch reference of each op."""

    def __init__(self, step):
        self.graph, self.writes = step.graph, step.writes
        self.reads = [p.name for p in step.graph.params]
        # Scheduled once, run every batch; the outputs replace the state they are written to, so the
        # optimizer update may write over the old weights and slots (as the triton backends do).
        self._run = ReferenceRun(step.graph, donated={i: name for i, name in enumerate(step.writes) if name})
        self._rate = (None, None)  # the last learning rate and its tensor (no step writes into an input)

    def run(self, data, learning_rate, rows, state) -> None:
        if rows is not None:
            data = [t.index_select(0, rows) for t in data]  # t[rows], in half the time for a small batch
        if self._rate[0] != learning_rate:
            self._rate = (learning_rate, torch.tensor(learning_rate, dtype=torch.float32))
        state.write(self.writes, self._run([*data, self._rate[1]], state.read(self.reads)))


def runner_for(model, step) -> StepRunner:
    """The runner of `step` for the model's backend, made at its first batch: on the triton
    backends the step graph is fused and planned then (its pipeline hoists nothing)."""
    parallel = distribution.distribution()
    # A runner serves the distribution it was made under (DataParallelStep keeps it; the others None):
    # a distribution set or left between two fits makes the step's runner anew.
    if step.runner is None or getattr(step.runner, "distribution", None) is not parallel:
        if parallel is not None:  # data-parallel: the step on this process's shard, gradients summed over the job
            step.runner = parallel.runner(model, step)
        elif model.backend == "reference":
            step.runner = ReferenceStep(step)
        else:
            from kcomp.passes import run_pipeline
            from kcomp.runtime import cuda_graphs
            from kcomp.runtime.plan import Plan
            from kcomp.training.device_step import DeviceStep

            fused, _ = run_pipeline(step.graph)
            step.runner = DeviceStep(step, Plan(fused, model._precision), cuda_graphs.graphs_for(device_of(model)))
    return step.runner


def device_of(model) -> torch.device:
    """Where a model's training runs: the GPU for the triton backend, else the CPU."""
    return torch.device("cuda" if model.backend == "triton" else "cpu")
