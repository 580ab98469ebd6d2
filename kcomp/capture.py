"""Whether a CUDA-graph capture is recording now, and what it must keep or defer.

The lowest layer, so that every layer can ask: an op's torch reference (kcomp.ir) must not
read a value back to the host while a capture records, and the optimizer's kernel launcher
(kcomp.kernels) keeps tables alive for the graph and defers writes until the capture ends.

Whoever captures (kcomp.runtime.cuda_graphs on a GPU; the CPU stand-in in
tests/capture_emulator.py) makes a `Recording` and runs the capture inside
`recording(it)`; the code that runs during the capture finds it with `current()`. The
recording is scoped to that `with` (a context variable), so nothing is left behind in the
module when a capture ends or fails, and a stand-in plugs in by passing its own Recording.
"""

from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from kcomp.errors import KcompError


class Recording:
    """One capture in progress: what its graph reads that nobody else holds, and the writes
    to do once it ends."""

    def __init__(self):
        self.kept: list = []
        self.deferred: list[Callable[[], object]] = []

    def keep(self, obj) -> None:
        self.kept.append(obj)

    def defer(self, write: Callable[[], object]) -> None:
        self.deferred.append(write)

    def finish(self) -> list:
        """Do the deferred writes (in order); what the graph must keep alive."""
        while self.deferred:
            self.deferred.pop(0)()
        return self.kept


_current: ContextVar[Recording | None] = ContextVar("kcomp_capture", default=None)


@contextmanager
def recording(capture: Recording):
    """Within: `capture` is the capture in progress."""
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)


def current() -> Recording | None:
    return _current.get()


def capture_in_progress(device: torch.device) -> bool:
    """Whether work on `device` is being recorded into a graph now: a read-back to the host or a
    copy from pageable host memory is forbidden then. On a GPU, any capture of the current
    stream counts, also one kcomp did not start."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return True
    return _current.get() is not None


def _recording_for(what: str) -> Recording:
    capture = _current.get()
    if capture is None:
        raise KcompError(f"{what} inside a CUDA-graph capture that kcomp did not start: capture kcomp's "
                         "steps through kcomp (fit and predict capture them themselves), not within your own graph.")
    return capture


def keep_for_the_graph(obj) -> None:
    """During a capture: keep `obj` (device memory the graph's kernels read, such as a table of
    addresses) alive for as long as the graph, and no longer."""
    _recording_for("A kcomp kernel's table made").keep(obj)


def outside_the_graph(write: Callable[[], object]) -> None:
    """During a capture: do `write` (filling memory the graph only reads, with values known now,
    such as a table of the addresses the capture allocated) outside the graph, once, when the
    capture ends, instead of recording it into every replay."""
    _recording_for("A kcomp kernel's table filled").defer(write)
