"""Capture a plan's run in one CUDA graph per batch shape, then replay it.

A replay launches every kernel of the forward (or of the whole training step)
with one call and no Python in between, which is what makes small,
launch-bound models fast. Inputs are copied into static buffers the graph
reads; outputs come from the static buffers it writes.

How a run is warmed up and captured is one object, `CudaGraphs` on a CUDA
device. A CPU stand-in with the same two methods (tests/capture_emulator.py)
records what a capture would freeze and replays exactly that, so the capture
logic is checked without a GPU; `graphs_for` is the one place that picks, and
`capturing_with` is how a stand-in is plugged in.
"""

from contextlib import contextmanager
from contextvars import ContextVar

import torch

from kcomp import capture
from kcomp.runtime.versions import mark_written


class CudaGraphs:
    """Warm-up and capture on the current CUDA device."""

    def warm_up(self, run):
        """run() for real on a side stream (as torch requires before a capture): it compiles and
        autotunes every kernel, none of which may happen inside a capture."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            result = run()
        torch.cuda.current_stream().wait_stream(stream)
        return result

    def capture(self, run) -> tuple:
        """(graph, run's result): run() recorded, not run; graph.replay() runs it."""
        graph = torch.cuda.CUDAGraph()
        recording = capture.Recording()
        try:
            with capture.recording(recording), torch.cuda.graph(graph):
                result = run()
        finally:
            kept = recording.finish()  # the writes it left for after it (capture.outside_the_graph)
        return _GraphKeeping(graph, kept), result


class _GraphKeeping:
    """A captured CUDA graph with the objects it reads that nobody else holds (keep_for_the_graph)."""

    def __init__(self, graph, kept: list):
        self.graph, self.kept = graph, kept

    def replay(self) -> None:
        self.graph.replay()


_plugged_in: ContextVar[object] = ContextVar("kcomp_graphs", default=None)


def graphs_for(device: torch.device):
    """What captures steps on `device`: CUDA graphs on a GPU; None (run each step as it is) elsewhere;
    within `capturing_with(graphs)`, those graphs on any device."""
    plugged_in = _plugged_in.get()
    if plugged_in is not None:
        return plugged_in
    return CudaGraphs() if device.type == "cuda" else None


@contextmanager
def capturing_with(graphs):
    """Within: steps and forwards made now capture with `graphs` (an object with CudaGraphs'
    warm_up and capture), on any device: how a stand-in for CUDA graphs is plugged in."""
    token = _plugged_in.set(graphs)
    try:
        yield graphs
    finally:
        _plugged_in.reset(token)


class CapturedForward:
    """A plan's forward replayed from one graph for one batch shape; outputs are cloned out."""

    def __init__(self, plan, inputs, params, graphs):
        self.static_inputs = [t.clone() for t in inputs]
        graphs.warm_up(lambda: plan.run(self.static_inputs, params))  # also computes the weight-only values
        self.graph, self.static_outputs = graphs.capture(lambda: plan.run(self.static_inputs, params))

    def replay(self, inputs) -> list[torch.Tensor]:
        for static, t in zip(self.static_inputs, inputs):
            static.copy_(t, non_blocking=True)
        self.graph.replay()
        return [o.clone() for o in self.static_outputs]


class CapturedStep:
    """A training (or test) step replayed from one CUDA graph per batch shape.

    The step reads the weights, optimizer slots and moving statistics from
    fixed buffers (`params`) and, inside the graph, copies their new values back
    into those buffers, so one replay is the whole step: batch in, updated state
    out, with no Python in between and nothing read back to the host. `writes[i]`
    names the buffer output i updates (None: a loss or metric output, returned).

    The first call for a batch shape runs the step for real (compiling and
    autotuning every kernel: none of that may happen during a capture), then
    captures it; later calls copy their inputs into the captured input buffers
    (or gather their rows straight into them) and replay. One-element inputs on
    the host (the learning rate, the step count) are written with fill_, a kernel
    launch that carries the value, so no copy from pageable memory stalls the
    host; batches should already be on the device. Returned outputs are the
    graph's own buffers: use them before the next call. graphs=None runs the same
    buffer logic without a graph.
    """

    def __init__(self, plan, inputs, params: dict, writes: list, device, graphs=None, rows=None, in_place=()):
        self.plan, self.params, self.writes = plan, params, writes
        # Outputs the plan's kernels write straight into their buffers (Plan.in_place_outputs): no copy.
        self.into = {i: params[writes[i]] for i in in_place}
        self.written = [params[name] for name in writes if name is not None]
        with torch.inference_mode(False):  # evaluate may come first; test_on_batch stages outside inference mode
            self.static_inputs = [torch.empty(shape, dtype=input_dtype(t), device=device)
                                  for t, shape in zip(inputs, batch_shapes(inputs, rows))]
        self._staged: dict[int, object] = {}  # input index -> the host number or uniform tensor last staged there
        self.graph = None
        self.first_outputs = None  # the capturing call's outputs, returned by the run that follows it
        if graphs is None:
            return
        self.stage(inputs, rows)
        self.first_outputs = graphs.warm_up(self._step)  # this batch's step, run for real
        self.graph, self.static_outputs = graphs.capture(self._step)

    def _step(self) -> list:
        outputs = self.plan.run(self.static_inputs, self.params, into=self.into)
        self._bump_versions()
        returned = []
        for i, (name, value) in enumerate(zip(self.writes, outputs, strict=True)):
            if name is None:
                returned.append(value)
            elif i not in self.into:
                self.params[name].copy_(value)
        return returned

    def stage(self, inputs, rows=None) -> None:
        """Write this call's inputs into the captured input buffers, launching as little as
        possible (each launch is host time on a GPU). A Python number is written with fill_ (its
        value rides in the kernel's arguments), and only when it changed (a constant learning
        rate is written once). With `rows` (an index tensor), inputs that have a batch axis are
        whole data sets and their rows are gathered straight into the buffers; one whose batch
        stride is 0 (the same value for every sample: default sample weights) is written once."""
        for i, (static, t) in enumerate(zip(self.static_inputs, inputs)):
            if isinstance(t, (int, float)):
                if self._staged.get(i) != t:
                    static.fill_(t)
                    self._staged[i] = t
            elif t.dim() > 0 and t.stride(0) == 0 and t.shape[0] > 0:
                if self._staged.get(i) is not t:
                    static.copy_(t[:1].expand(static.shape), non_blocking=True)
                    self._staged[i] = t
            else:
                self._staged.pop(i, None)  # the buffer now holds something else
                if rows is not None and t.dim() > 0:
                    torch.index_select(t, 0, rows, out=static)
                else:
                    static.copy_(t, non_blocking=True)

    def run(self, inputs, rows=None) -> list:
        if self.graph is None:
            self.stage(inputs, rows)
            return self._step()
        if self.first_outputs is not None:  # the capturing call already ran this batch
            outputs, self.first_outputs = self.first_outputs, None
            return outputs
        self.stage(inputs, rows)
        self.graph.replay()
        self._bump_versions()
        return self.static_outputs

    def _bump_versions(self) -> None:
        """Mark the buffers the step wrote as changed (kcomp.runtime.versions): whoever caches
        values computed from them (a forward plan's folded batch norm) checks the version
        counter. Host-only; during a capture it runs once and is not recorded."""
        mark_written(self.written)


def batch_shapes(inputs, rows=None) -> list[tuple]:
    """The shapes a step's inputs have in one batch: with `rows`, inputs with a batch axis
    (whole data sets) have len(rows) rows; scalars (tensors or Python numbers) keep theirs."""
    n = None if rows is None else rows.shape[0]
    return [() if isinstance(t, (int, float)) else tuple(t.shape) if n is None or t.dim() == 0
            else (n, *t.shape[1:]) for t in inputs]


def input_dtype(t) -> torch.dtype:
    """A step input's dtype; a Python number is a float32 scalar (the learning rate, the step)."""
    return torch.float32 if isinstance(t, (int, float)) else t.dtype
