"""Training and test steps as fused plans of generated kernels: state in fixed device buffers,
and on a GPU one CUDA graph per batch shape.

The model's weights, the optimizer's slots and the moving statistics move to
the device once, into buffers the model then holds (TrainState.on_device):
`var.value` IS the device buffer, so get_weights, checkpoints and callbacks see
the trained values. Each step graph (train, test) is captured once per batch
shape (kcomp.runtime.cuda_graphs.CapturedStep) and updates those buffers in
place. A weight the user replaces (set_weights, load_weights, EarlyStopping
restoring the best weights) is noticed by identity on the next step and copied
into its buffer; no capture has to be redone.
"""

import torch

from kcomp.runtime.cuda_graphs import CapturedStep, batch_shapes, input_dtype
from kcomp.training.state import TrainState


class DeviceStep:
    """Runs one step graph's fused plan on the state's device (a StepRunner, kcomp.training.runners),
    replaying a CUDA graph per batch shape where `graphs` captures (None: each step runs as it is)."""

    def __init__(self, step, plan, graphs=None):
        self.writes = step.writes
        self.plan, self.graphs = plan, graphs
        self.graph = plan.graph  # the fused step graph
        self.reads = [p.name for p in self.graph.params]
        self.captured: dict[tuple, CapturedStep] = {}
        self._checked = -1  # the state's generation when this step last checked its own buffers
        self._made: tuple = ()  # when each buffer this step reads was made, at that check
        # New weights and slots the optimizer kernel writes over the old ones in place (no copy).
        self.in_place = plan.in_place_outputs(dict(enumerate(self.writes)))

    def run(self, data: list[torch.Tensor], learning_rate: float, rows, state: TrainState) -> None:
        # the learning rate as a number: staged with fill_, not a host copy
        self.run_inputs([*data, learning_rate], rows, state)

    def run_inputs(self, inputs: list, rows, state: TrainState) -> None:
        """One step on the step graph's inputs (tensors, or numbers for its float32 scalars)."""
        buffers = state.on_device(self.reads)
        if state.generation != self._checked:  # some buffer was made anew: one of ours?
            made = tuple(state.made[name] for name in buffers)
            if made != self._made:
                self.captured.clear()  # they read buffers that are no longer the model's
            self._checked, self._made = state.generation, made
        key = tuple((shape, input_dtype(t)) for shape, t in zip(batch_shapes(inputs, rows), inputs))
        captured = self.captured.get(key)
        if captured is None:  # the first batch of this shape since the step's buffers were made
            captured = CapturedStep(self.plan, inputs, buffers, self.writes, state.device, self.graphs, rows,
                                    self.in_place)
            self.captured[key] = captured
        captured.run(inputs, rows)  # writes the new state into the buffers the state holds
