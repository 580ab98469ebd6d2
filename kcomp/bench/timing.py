"""The clock: warm-up, then the median of repeats, contenders alternating so that a slow spell of a
shared machine falls on all of them alike rather than on whichever ran then."""

import statistics
import time

import torch


def synchronizer(device: str):
    """What waits for queued device work: on CUDA, kernels launch asynchronously, so a clock read
    without a synchronize measures launches, not work. Called before the start and before the stop."""
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def time_once(fn, sync) -> float:
    """Seconds of one fn() call, the device drained before and after."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def alternating_medians(blocks: dict, repeats: int, device: str, warmup: int = 1) -> dict[str, float]:
    """{name: median seconds of one blocks[name]() call}: each block warmed up `warmup` times, then
    the blocks run in turn, `repeats` rounds."""
    sync = synchronizer(device)
    for fn in blocks.values():
        for _ in range(warmup):
            time_once(fn, sync)
    seconds = {name: [] for name in blocks}
    for _ in range(repeats):
        for name, fn in blocks.items():
            seconds[name].append(time_once(fn, sync))
    return {name: statistics.median(values) for name, values in seconds.items()}
