"""What fit's and evaluate's epochs read: batches of arrays held on the device, or a stream.

A feed gives each epoch's batches as (inputs, targets, sample weights, rows) and `steps`, the
batches of an epoch when known (the progress bar's target, callbacks' params["steps"]).

  ArrayFeed   the whole data set moved to the device once; a batch is an index tensor of rows
              of it (the step gathers them), in an order reshuffled each pass
  StreamFeed  a generator or PyDataset (kcomp/training/streams.py), each batch prepared and moved
              on the prefetch thread (kcomp/training/prefetch.py); rows None

With steps_per_epoch both go on through the data across epochs, as Keras 3 does: an epoch that
reaches the end of a pass stops there (with Keras's warning) and the next starts a new pass.
A feed made with restart=True (fit's validation, as Keras resets its iterator before each
evaluation) starts a new pass every epoch instead, except for a generator, which cannot be
started again: it is read on.
"""

import contextlib
import warnings

import torch

from kcomp import distribution, session
from kcomp.training.prefetch import Prefetcher
from kcomp.training.streams import prepare


def ran_out_warning(got: int, wanted: int) -> None:
    warnings.warn(f"Your input ran out of data after {got} of steps_per_epoch={wanted} batches; this epoch ends "
                  "there, as in Keras. Make sure that your data can generate at least `steps_per_epoch * epochs` "
                  "batches.", stacklevel=4)


class ArrayFeed:
    def __init__(self, xs, ys, sw, n, batch_size, shuffle, steps_per_epoch, device, restart=False):
        self.data, self.n, self.batch_size, self.shuffle = (xs, ys, sw), n, batch_size, shuffle
        self.steps_per_epoch, self.device, self.restart = steps_per_epoch, device, restart
        batches = -(-n // batch_size)
        self.steps = batches if steps_per_epoch is None else min(batches, steps_per_epoch)
        self._left_over: list = []  # with steps_per_epoch: the batches of this pass not read yet

    def _pass(self, shuffle) -> list:
        # In a data-parallel job every process reads process 0's order (each sample once per epoch).
        order = distribution.same_order(torch.randperm(self.n, generator=session.generator(None))) if shuffle \
            else torch.arange(self.n)
        order = order.to(self.device)  # one copy per pass; batches gather on the device
        return [order[s : s + self.batch_size] for s in range(0, self.n, self.batch_size)]

    @contextlib.contextmanager
    def epoch(self):
        if self.steps_per_epoch is None or self.restart:
            rows = self._pass(self.shuffle)[: self.steps_per_epoch]
        else:
            self._left_over = self._left_over or self._pass(self.shuffle)
            rows, self._left_over = self._left_over[: self.steps_per_epoch], self._left_over[self.steps_per_epoch :]
            if len(rows) < self.steps_per_epoch:
                ran_out_warning(len(rows), self.steps_per_epoch)
        yield ((*self.data, idx) for idx in rows)

    def close(self):
        pass


class StreamFeed:
    """Batches from a Stream; `kind` "train" or "test" (what `prepare` checks)."""

    def __init__(self, model, compiled, stream, kind, shuffle, steps_per_epoch, device, class_weight=None, restart=False):
        self.stream, self.shuffle, self.steps_per_epoch, self.device = stream, shuffle, steps_per_epoch, device
        self.restart = restart
        self.prepare = prepare(model, compiled, kind, stream.kind, class_weight)
        self.counts = (len(model.inputs), len(model.outputs))
        self.steps = steps_per_epoch or stream.length
        self._pass, self._read = None, 0  # the pass going on, and how many of its batches were read

    @contextlib.contextmanager
    def epoch(self):
        if self._pass is None or (self.stream.restartable and (self.steps_per_epoch is None or self.restart)):
            self._pass, self._read = self.stream.new_pass(self.shuffle), 0
        self.stream.on_epoch_begin()
        prefetcher = Prefetcher(self._pass, self.prepare, self.device, self.steps_per_epoch, self.stream.max_queue_size)
        counter = {"read": 0}
        try:
            yield self._batches(prefetcher, counter)
        finally:
            prefetcher.close()
        self.stream.on_epoch_end()
        self._read += counter["read"]
        wanted = self.steps_per_epoch
        if wanted is not None and counter["read"] < wanted:
            if counter["read"]:  # (none at all: the loop says the data ran out)
                ran_out_warning(counter["read"], wanted)
            self._pass = None  # the pass ended: the next epoch starts a new one
        elif self.stream.length is not None and self._read >= self.stream.length:
            self._pass = None

    def _batches(self, prefetcher, counter):
        inputs, outputs = self.counts
        for tensors in prefetcher:
            counter["read"] += 1
            yield tensors[:inputs], tensors[inputs : inputs + outputs], tensors[inputs + outputs], None

    def close(self):
        self.stream.close()
