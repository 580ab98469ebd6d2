"""Batches made ready on a background thread while the current step runs.

A Prefetcher pulls raw batches from an iterator (a user's generator, or a PyDataset read by
`workers` threads), prepares each (checks it and makes tensors, kcomp/training/streams.py)
and moves it to the model's device into a bounded queue, `max_queue_size` batches ahead. On a
GPU the host tensors are pinned and copied with non_blocking=True on a side stream, so the copy
overlaps the step that runs; the step's stream waits on the copy's event before reading.
Only the batches of the queue and the one in use are held, so data larger than memory streams.

An exception in the producer (the user's generator raising, a bad batch) is raised in the
caller as itself, with its traceback. close() (on leaving the `with`, at the epoch's end, on
early stopping, on KeyboardInterrupt) stops the thread and waits for it: no thread outlives it.
"""

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_DONE = object()  # the source ran out (or gave its `limit` batches)


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterate it for the prepared batches, at most `limit` of them (None: until the source ends)."""

    def __init__(self, source, prepare, device: torch.device, limit=None, max_queue_size=10):
        self._source, self._prepare, self._device, self._limit = source, prepare, device, limit
        self._queue = queue.Queue(maxsize=max(int(max_queue_size), 1))
        self._stop = threading.Event()
        self._copies = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._thread = threading.Thread(target=self._produce, name="kcomp-prefetch", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            count = 0
            while (self._limit is None or count < self._limit) and not self._stop.is_set():
                try:
                    raw = next(self._source)
                except StopIteration:
                    break
                self._put(self._to_device(self._prepare(raw)))
                count += 1
            self._put(_DONE)
        except BaseException as error:  # any: the caller raises it as itself
            self._put(_Raised(error))

    def _put(self, item) -> None:
        while not self._stop.is_set():  # a bounded wait: close() may be stopping a full queue's producer
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _to_device(self, tensors: list):
        """The batch's tensors on the device: pinned and copied on the side stream on a GPU."""
        if self._device.type != "cuda":
            return tensors, None
        with torch.cuda.stream(self._copies):
            moved = [_copy(t, self._device) for t in tensors]
            event = torch.cuda.Event()
            event.record(self._copies)
        return moved, event

    def __iter__(self):
        return self

    def __next__(self) -> list:
        if self._thread is None:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE or isinstance(item, _Raised):
            self.close()
            if item is _DONE:
                raise StopIteration
            raise item.error
        tensors, event = item
        if event is not None:  # the step's stream waits for the copy, and owns the memory from here
            current = torch.cuda.current_stream(self._device)
            current.wait_event(event)
            for t in tensors:
                t.record_stream(current)
        return tensors

    def close(self) -> None:
        """Stop the producer and wait for it (it finishes the batch it is preparing)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        while thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()  # room for a producer blocked in put
            except queue.Empty:
                pass
            thread.join(timeout=0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if t.dim() and t.stride(0) == 0 and len(t):  # one value for every sample (weights 1): one element moves
        return t[:1].to(device, non_blocking=False).expand(t.shape)
    return t.pin_memory().to(device, non_blocking=True)


def ordered_map(function, indices, workers: int, ahead: int):
    """function(i) for each index, computed by `workers` threads up to `ahead` indices ahead,
    yielded in the indices' order (a PyDataset's __getitem__ read in parallel)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kcomp-pydataset")
    pending = []
    try:
        for index in indices:
            pending.append(pool.submit(function, index))
            if len(pending) >= max(ahead, workers):
                yield pending.pop(0).result()
        while pending:
            yield pending.pop(0).result()
    finally:  # closed early: what has not started is dropped, what runs finishes
        pool.shutdown(wait=True, cancel_futures=True)
