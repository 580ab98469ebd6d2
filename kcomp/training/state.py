"""A compiled model's training state: every tensor the step graphs read and update, by name.

The names are the step graphs' parameter names, and are made here only:

  <weight path>                   a weight or a moving statistic (its Variable's value)
  optimizer/<weight path>/<j>     the optimizer's j-th slot for that weight
  optimizer/iterations            the optimizer's iteration count, as the step counts it on the device
  accumulator/<train|test>/<i>    an epoch's running sums (the loss's, then each logged value's)

`TrainState` is the one way training reads and writes them: `state[name]` is the tensor,
`state[name] = t` puts a new one where its owner keeps it. Weights and slots stay stored
where a Keras user reads them (Variable.value for get_weights and callbacks, the optimizer's
slots for saving), so nothing has a second copy to keep in step; the running sums and the
device-side iteration count are the state's own. On a device whose steps update their state
in place (kcomp.training.device_step), the state also keeps one device buffer per name
(`on_device`), and the model's Variables and slots then hold those very buffers.
"""

import torch

from kcomp.errors import KcompError

ITERATIONS = "optimizer/iterations"


def slot_name(weight_path: str, index: int) -> str:
    return f"optimizer/{weight_path}/{index}"


def accumulator_name(kind: str, index: int | None) -> str:
    """The running sum `index` of a `kind` ("train" | "test") step; None: the loss's."""
    return f"accumulator/{kind}/{'loss' if index is None else index}"


class _Weight:
    def __init__(self, variable):
        self.variable = variable

    def get(self) -> torch.Tensor:
        return self.variable.value

    def set(self, tensor: torch.Tensor) -> None:
        self.variable.value = tensor


class _Slot:
    """Looked up at each access: loading an optimizer's state may replace a weight's slot list."""

    def __init__(self, optimizer, weight_path: str, index: int):
        self.optimizer, self.weight_path, self.index = optimizer, weight_path, index

    def get(self) -> torch.Tensor:
        return self.optimizer.slots[self.weight_path][self.index]

    def set(self, tensor: torch.Tensor) -> None:
        self.optimizer.slots[self.weight_path][self.index] = tensor


class _Attribute:
    """A tensor an object keeps as an attribute (a LossScaleOptimizer's scale and good-step count)."""

    def __init__(self, owner, attribute: str):
        self.owner, self.attribute = owner, attribute

    def get(self) -> torch.Tensor:
        return getattr(self.owner, self.attribute)

    def set(self, tensor: torch.Tensor) -> None:
        setattr(self.owner, self.attribute, tensor)


class TrainState:
    """Name -> tensor for a compiled model's weights, optimizer slots, iteration count and
    running sums, and (on a device that updates in place) one device buffer per name."""

    def __init__(self, model, optimizer, device: torch.device):
        self.model, self.optimizer, self.device = model, optimizer, device
        self._counters: dict[str, torch.Tensor] = {}  # the running sums and ITERATIONS: owned here
        self._places: dict[str, _Weight | _Slot] = {}  # where each weight and slot is kept
        self._variables: list | None = None  # the model's weights, taken at the first step of this compile
        self._iterations_held: int | None = None  # the count the ITERATIONS tensor holds, as the host knows it
        self._buffers: dict[str, torch.Tensor] = {}
        self.generation = 0  # counts device buffers made anew (a capture reading an older one is stale)
        self.made: dict[str, int] = {}  # name -> the generation its buffer was made in
        # In a data-parallel job, the running sums added over every process (kcomp.distribution):
        # what the logs read; the state's own sums stay this process's, which its steps add to.
        self.job_sums: dict[str, torch.Tensor] = {}

    # -- name -> tensor -------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        counter = self._counters.get(name)
        return counter if counter is not None else self._place(name).get()

    def __setitem__(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._counters:
            self._counters[name] = tensor
        else:
            self._place(name).set(tensor)

    def read(self, names) -> dict[str, torch.Tensor]:
        return {name: self[name] for name in names}

    def write(self, names, tensors) -> None:
        """state[name] = tensor for each pair whose name is not None (None: an output that is
        not state, such as a returned loss)."""
        for name, tensor in zip(names, tensors, strict=True):
            if name is not None:
                self[name] = tensor

    def _place(self, name: str):
        place = self._places.get(name)
        if place is None:  # a weight or slot made since the table was built (the optimizer builds its slots)
            self._places = self._all_places()
            place = self._places.get(name)
            if place is None:
                raise KeyError(f"{name!r} is not part of this model's training state")
        return place

    def _all_places(self) -> dict:
        if self._variables is None:  # a compiled model's layers are fixed: its weight list is taken once
            self._variables = list(self.model.weights)
        places = {}
        entries = [(var.path, _Weight(var)) for var in self._variables]
        entries += [(slot_name(path, j), _Slot(self.optimizer, path, j))
                    for path, slots in self.optimizer.slots.items() for j in range(len(slots))]
        if getattr(self.optimizer, "counts_on_device", False):
            from kcomp.optimizers.loss_scale import LOSS_SCALE, LOSS_SCALE_STEPS

            entries += [(LOSS_SCALE, _Attribute(self.optimizer, "dynamic_scale")),
                        (LOSS_SCALE_STEPS, _Attribute(self.optimizer, "step_counter"))]
        for name, place in entries:
            if name in places or name in self._counters:
                raise KcompError(f"Two pieces of training state are both named {name!r} (a weight path that looks "
                                 "like an optimizer slot or counter): rename the layer that owns it.")
            places[name] = place
        return places

    # -- the counters ---------------------------------------------------------------
    def zero_sums(self, names_and_shapes) -> None:
        """Start the running sums (name, shape) at zero, as each epoch and evaluate does."""
        for name, shape in names_and_shapes:
            self._counters[name] = torch.zeros(shape, dtype=torch.float32, device=self.device)
            self.job_sums.pop(name, None)

    def logged(self, name: str) -> torch.Tensor:
        """A running sum as the logs show it: the whole job's in a data-parallel run, else this state's."""
        summed = self.job_sums.get(name)
        return self[name] if summed is None else summed

    def before_train_step(self) -> None:
        """The training step counts on the device; the host writes the count only when it differs
        from the one the device holds (the first step, or a user setting optimizer.iterations)."""
        if getattr(self.optimizer, "counts_on_device", False):
            # A loss-scaled step may be skipped, so only the device knows the count: the optimizer
            # reads it from there when asked (device_count), and a count set by the user, or none
            # yet, is written down.
            if self.optimizer.device_count is None or ITERATIONS not in self._counters:
                self._counters[ITERATIONS] = torch.full((), float(self.optimizer.iterations), device=self.device)
                self.optimizer.device_count = lambda: self._counters[ITERATIONS]
            return
        if self._iterations_held != self.optimizer.iterations:
            self._counters[ITERATIONS] = torch.full((), float(self.optimizer.iterations), device=self.device)

    def after_train_step(self) -> None:
        if getattr(self.optimizer, "counts_on_device", False):
            return  # counted on the device (before_train_step)
        self.optimizer.iterations += 1  # Keras's count, which schedules and checkpoints read on the host
        self._iterations_held = self.optimizer.iterations

    # -- device buffers ---------------------------------------------------------------
    def on_device(self, names) -> dict[str, torch.Tensor]:
        """One device buffer per name, which the owner (Variable, slot list, counter) then holds,
        so a step that updates them in place updates the model. A tensor the user put in place of
        one (set_weights, load_weights, EarlyStopping restoring the best weights) is noticed by
        identity and copied into the same buffer; a new shape or dtype makes a new buffer (and
        counts a generation: captures that read the old one are stale)."""
        for name in names:
            tensor, buffer = self[name], self._buffers.get(name)
            if tensor is buffer:
                continue  # the usual case: the owner holds the buffer the last step updated
            with torch.inference_mode(False):  # evaluate may come first; training updates these in place
                if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
                    self._buffers[name] = buffer = tensor.detach().to(self.device, copy=True)
                    self.generation += 1
                    self.made[name] = self.generation
                else:
                    buffer.copy_(tensor)  # replaced by the user: same buffer, new values
            self[name] = buffer
        return {name: self._buffers[name] for name in names}
