"""A CPU stand-in for CUDA graphs, to check kcomp's capture logic without a GPU.

A CUDA graph records the kernels a run launches, with their arguments frozen:
the same buffer addresses and the same scalar values at every replay. Code
that is right when run step by step can be wrong when replayed: a value the
host computed during the capture (a learning rate passed as a Python float, a
table rebuilt from a cache) stays what it was, and a read-back to the host
inside a capture is an error.

`EmulatedGraphs` has CudaGraphs' two methods (kcomp/runtime/cuda_graphs.py).
Its capture runs the step once while recording every torch call and every
Triton launch (a TorchFunctionMode and a hook on the interpreter's launcher),
then puts back the memory that existed before the capture, since a real
capture only records. A replay re-executes exactly the recorded calls on the
recorded tensors with the recorded scalars; a torch call that computed a new
tensor writes it into the tensor captured then, which is what a graph's private
memory pool does, and a call that only allocated does nothing. Writes kcomp
makes outside the graph during a capture (kcomp.capture.outside_the_graph) are
done once and not recorded. A step that relies on Python running again therefore gives
wrong numbers here too, and the tests comparing against uncaptured runs see it.

What it cannot see: whether a copy reads pageable host memory (every tensor is
on the CPU here); whether the tensors a graph reads are kept alive (the
recording holds them); autotuning (the interpreter has one config per kernel);
a missing version-counter bump (the interpreter's copy-back bumps every kernel
argument); that memory allocated during a real capture holds garbage until the
first replay (here the capture ran for real); side streams.
"""

from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from triton.runtime.interpreter import InterpretedFunction

from kcomp import capture
from kcomp.runtime.cuda_graphs import capturing_with

# Calls that read a tensor's values on the host: a device synchronisation, forbidden in a capture.
HOST_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "__array__",
              "equal", "allclose", "__repr__", "__format__", "__str__", "cpu"}


# Calls that only allocate: a graph does no work for them at a replay (what the memory holds is
# whatever the recorded work wrote there since).
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty"}


class HostReadInCapture(AssertionError):
    pass


def _tensors(value) -> list:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class _Recorder(TorchFunctionMode):
    """Logs torch calls and Triton launches; snapshots memory that existed before the capture."""

    def __init__(self):
        super().__init__()
        self.log: list[tuple] = []
        self.known: set[int] = set()  # storage addresses seen: made before (snapshotted) or during the capture
        self.snapshots: list[tuple] = []  # (storage, its bytes before the capture)
        self.paused = False

    def _note_inputs(self, values) -> None:
        for t in _tensors(values):
            storage = t.untyped_storage()
            if t.numel() and storage.data_ptr() not in self.known:
                self.known.add(storage.data_ptr())
                self.snapshots.append((storage, storage.clone()))

    def _note_outputs(self, values) -> None:
        self.known.update(t.untyped_storage().data_ptr() for t in _tensors(values) if t.numel())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.paused:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in HOST_READS:
            raise HostReadInCapture(f"{name}() reads a tensor on the host inside a CUDA-graph capture")
        self._note_inputs((args, kwargs))
        result = func(*args, **kwargs)
        if result is None or _tensors(result):  # a tensor made or changed (None: __setitem__ and the like)
            self.log.append(("torch", func, args, kwargs, result))
            self._note_outputs(result)
        return result

    def launch(self, original, kernel, args, grid, kwargs):
        self._note_inputs((args, kwargs))
        self.log.append(("launch", original, kernel, args, grid, kwargs))
        self.paused = True  # the interpreter's own torch calls are not the step's
        try:
            return original(kernel, *args, grid=grid, warmup=False, **kwargs)
        finally:
            self.paused = False

    def unrecorded(self, write) -> None:
        """A write kcomp does outside the graph (kcomp.capture.outside_the_graph): done, not replayed."""
        self.paused = True
        try:
            write()
        finally:
            self.paused = False

    def restore(self) -> None:
        for storage, before in self.snapshots:
            storage.copy_(before)
        self.snapshots = []


@contextmanager
def _launches_recorded_by(recorder):
    original = InterpretedFunction.run

    def run(kernel, *args, grid, warmup, **kwargs):
        if warmup:
            return original(kernel, *args, grid=grid, warmup=warmup, **kwargs)
        return recorder.launch(original, kernel, args, grid, kwargs)

    InterpretedFunction.run = run
    try:
        yield
    finally:
        InterpretedFunction.run = original


class EmulatedGraph:
    def __init__(self, log):
        self.log = log
        self.replays = 0

    def replay(self) -> None:
        for entry in self.log:
            if entry[0] == "launch":
                _, original, kernel, args, grid, kwargs = entry
                original(kernel, *args, grid=grid, warmup=False, **kwargs)
                continue
            _, func, args, kwargs, captured = entry
            if getattr(func, "__name__", "") in ALLOCATIONS:
                continue
            result = func(*args, **kwargs)
            for old, new in zip(_tensors(captured), _tensors(result)):
                same_memory = (old.untyped_storage().data_ptr() == new.untyped_storage().data_ptr()
                               and old.storage_offset() == new.storage_offset() and old.stride() == new.stride())
                if not same_memory:
                    old.copy_(new)  # the graph writes this result where the capture put it
        self.replays += 1


class EmulatedGraphs:
    """CudaGraphs' interface on the CPU: warm_up runs, capture records (and undoes), replay re-executes."""

    def __init__(self):
        self.graphs: list[EmulatedGraph] = []

    def warm_up(self, run):
        return run()

    def capture(self, run) -> tuple:
        recorder = _Recorder()
        try:
            with capture.recording(_EmulatedRecording(recorder)), _launches_recorded_by(recorder), recorder:
                result = run()
        finally:
            recorder.restore()  # a capture records; it does not change the buffers that existed before
        graph = EmulatedGraph(recorder.log)
        self.graphs.append(graph)
        return graph, result


class _EmulatedRecording(capture.Recording):
    """The capture in progress, as kcomp's code sees it during an emulated one: what the graph
    reads is held by the recorder's log, and a write deferred to after the capture is done now,
    unrecorded (the emulated capture runs for real, so the memory exists now)."""

    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def keep(self, obj) -> None:
        pass  # the recorded log holds every tensor the replays read

    def defer(self, write) -> None:
        self.recorder.unrecorded(write)


@contextmanager
def emulated_cuda_graphs():
    """Within: kcomp captures steps and forwards on the CPU with EmulatedGraphs (yielded)."""
    with capturing_with(EmulatedGraphs()) as graphs:
        yield graphs
