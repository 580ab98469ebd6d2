"""Whether a CUDA-graph capture is recording now, and what it must keep or defer.

The lowest layer, so that every layer can ask: an op's torch reference (kcomp.ir) must not
read a value back to the host while a capture records, and the optimizer's kernel launcher
(kcomp.kernels) keeps tables alive for the graph and defers writes until the capture ends.
The capture itself is run by kcomp.runtime.cuda_graphs; a CPU stand-in that records what a
capture would freeze (tests/capture_emulator.py) sets `emulated_capture` while it records.
"""

import torch

emulated_capture = None  # a CPU stand-in's recorder, while it records a capture
deferred: list = []  # writes to do once the capture in progress ends
kept: list = []  # what the capture in progress reads and must outlive it


def capture_in_progress(device: torch.device) -> bool:
    """Whether work on `device` is being recorded into a graph now: a read-back to the host or a
    copy from pageable host memory is forbidden then."""
    if device.type == "cuda":
        return torch.cuda.is_current_stream_capturing()
    return emulated_capture is not None


def keep_for_the_graph(obj) -> None:
    """During a capture: keep `obj` (device memory the graph's kernels read, such as a table of
    addresses) alive for as long as the graph, and no longer."""
    kept.append(obj)


def outside_the_graph(write) -> None:
    """During a capture: do `write` (filling memory the graph only reads, with values known now,
    such as a table of the addresses the capture allocated) outside the graph, once, when the
    capture ends, instead of recording it into every replay."""
    if emulated_capture is not None:
        emulated_capture.unrecorded(write)  # the stand-in runs the capture for real: write now, unrecorded
    else:
        deferred.append(write)
