"""Training and test steps on a CUDA GPU: state in fixed device buffers, one CUDA graph per batch shape.

The model's weights, the optimizer's slots and the moving statistics move to
the device once, into buffers the model then holds: `var.value` IS the device
buffer, so get_weights, checkpoints and callbacks see the trained values. Each
step graph (train, test) is captured once per batch shape
(kcomp.runtime.cuda_graphs.CapturedStep) and updates those buffers in place.
A weight the user replaces (set_weights, load_weights, EarlyStopping restoring
the best weights) is noticed by identity on the next step and copied into its
buffer; no capture has to be redone.
"""

import torch

from kcomp.runtime.cuda_graphs import CapturedStep, batch_shapes, input_dtype


class DeviceState:
    """Where each piece of training state lives on the device, shared by a model's steps."""

    def __init__(self, model, compiled, device):
        self.model, self.compiled, self.device = model, compiled, device
        self.buffers: dict[str, torch.Tensor] = {}
        self.generation = 0  # counts buffers made anew (a capture reading an older one is stale)
        self.made: dict[str, int] = {}  # name -> the generation its buffer was made in

    def _setters(self) -> dict:
        setters = {var.path: (lambda t, var=var: setattr(var, "value", t)) for var in self.model.weights}
        for path, slots in self.compiled.optimizer.slots.items():
            for j in range(len(slots)):
                setters[f"optimizer/{path}/{j}"] = lambda t, slots=slots, j=j: slots.__setitem__(j, t)
        for name in self.compiled.accumulators:
            setters[name] = lambda t, name=name: self.compiled.accumulators.__setitem__(name, t)
        return setters

    def sync(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The device buffers for `params` (name -> the model's current tensor)."""
        setters = None
        for name, tensor in params.items():
            buffer = self.buffers.get(name)
            if tensor is buffer:
                continue  # the usual case: the model holds the buffer the last step updated
            with torch.inference_mode(False):  # evaluate may come first; training updates these in place
                if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                    self.buffers[name] = buffer = tensor.detach().to(self.device, copy=True)
                    self.generation += 1
                    self.made[name] = self.generation
                else:
                    buffer.copy_(tensor)  # replaced by the user: same buffer, new values
            setters = setters or self._setters()
            setters[name](buffer)
        return {name: self.buffers[name] for name in params}


class DeviceStep:
    """Runs one step graph's fused plan on the device, replaying a CUDA graph per batch shape."""

    updates_in_place = True  # the step writes new weights into the model's buffers itself
    gathers_rows = True  # takes whole data sets and a batch's row indices (see CapturedStep.stage)

    def __init__(self, step, plan, state: DeviceState, graphs=None):
        self.writes = [_buffer_name(kind, target) for kind, target in step.updates]
        self.plan, self.state, self.graphs = plan, state, graphs  # graphs=None: no capture (the CPU)
        self.graph = plan.graph  # the fused step graph
        self.captured: dict[tuple, CapturedStep] = {}
        self._checked = -1  # the state's generation when this step last checked its own buffers
        self._made: tuple = ()  # when each buffer this step reads was made, at that check
        # New weights and slots the optimizer kernel writes over the old ones in place (no copy).
        self.in_place = plan.in_place_outputs({i: name for i, name in enumerate(self.writes) if name is not None})

    def __call__(self, inputs, params, rows=None) -> list[torch.Tensor]:
        buffers = self.state.sync({p.name: params[p.name] for p in self.graph.params})  # what this step reads
        if self.state.generation != self._checked:  # some buffer was made anew: one of ours?
            made = tuple(self.state.made[name] for name in buffers)
            if made != self._made:
                self.captured.clear()  # they read buffers that are no longer the model's
            self._checked, self._made = self.state.generation, made
        key = tuple((shape, input_dtype(t)) for shape, t in zip(batch_shapes(inputs, rows), inputs))
        captured = self.captured.get(key)
        if captured is None:  # the first batch of this shape since the step's buffers were made
            captured = CapturedStep(self.plan, inputs, buffers, self.writes, self.state.device, self.graphs, rows,
                                    self.in_place)
            self.captured[key] = captured
        return captured.run(inputs, rows)


def _buffer_name(kind: str, target) -> str:
    if kind == "slot":
        var, j = target
        return f"optimizer/{var.path}/{j}"
    if kind in ("accumulator", "iterations"):
        return target  # its parameter name
    return target.path  # a weight or a moving statistic
