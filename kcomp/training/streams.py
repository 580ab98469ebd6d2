"""Data given as a stream of batches, as Keras 3 takes it: a Python generator (or any iterator)
yielding (x,), (x, y) or (x, y, sample_weight), or a kcomp.utils.PyDataset read by index.

A Stream gives passes over its batches (a generator has one pass; a PyDataset one per epoch,
its batch order shuffled when fit shuffles) and the first batch's x, from which a model that
learns its input shape from data is built. `prepare` turns one raw batch into checked tensors
(the same checks the arrays of fit get), run on the prefetch thread (kcomp/training/prefetch.py).
"""

import itertools
import types
import warnings

import numpy as np
import torch

from kcomp import distribution, session
from kcomp.errors import ArgumentError, KcompError
from kcomp.training.data import (
    check_class_ids, check_embedding_ids, check_lengths, model_inputs, refuse_weights_with_masks, sample_weights, targets,
)
from kcomp.training.prefetch import ordered_map
from kcomp.utils.py_dataset import PyDataset


def stream_of(x):
    """The Stream of `x` when it is a generator, an iterator or a PyDataset, else None (arrays)."""
    if isinstance(x, Stream):
        return x
    if isinstance(x, PyDataset):
        return DatasetStream(x)
    if isinstance(x, types.GeneratorType) or (hasattr(x, "__next__") and not isinstance(x, (np.ndarray, torch.Tensor))):
        return GeneratorStream(x)
    return None


class Stream:
    kind = "generator"
    restartable = False  # whether a new pass reads the data again (a generator's second pass is empty)
    length = None  # batches in a pass, None when unknown or infinite
    max_queue_size = 10

    def new_pass(self, shuffle: bool):
        raise NotImplementedError

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass

    def close(self):
        pass


class GeneratorStream(Stream):
    """A generator's one pass; the batch read to build a model is given again first."""

    def __init__(self, iterator):
        self._iterator, self._peeked, self._passes = iterator, [], 0

    def first_x(self):
        if not self._peeked:
            try:
                self._peeked.append(next(self._iterator))
            except StopIteration:
                raise ArgumentError("The generator given as x yielded no batch; there is nothing to run on.") from None
        return batch_tuple(self._peeked[0], "generator")[0]

    def new_pass(self, shuffle):
        self._passes += 1  # a second pass of a generator is empty: it cannot be started again
        if self._passes > 1:
            return iter(())
        peeked, self._peeked = self._peeked, []
        return itertools.chain(peeked, self._iterator)


class DatasetStream(Stream):
    kind = "PyDataset"
    restartable = True

    def __init__(self, dataset: PyDataset):
        self.dataset = dataset
        self.length = dataset.num_batches
        self.max_queue_size = dataset.max_queue_size
        self._workers = int(dataset.workers)
        if dataset.use_multiprocessing:
            raise ArgumentError(
                f"Received a PyDataset with use_multiprocessing=True: kcomp reads a PyDataset with threads only "
                f"(workers={dataset.workers}). Pass use_multiprocessing=False; threads overlap the step as well "
                "when __getitem__ spends its time in numpy, Pillow or file reads, which release the GIL."
            )
        self._open = []  # the parallel readers of passes not finished (closed at the end)

    def first_x(self):
        return batch_tuple(self.dataset[0], "PyDataset")[0]

    def new_pass(self, shuffle):
        if self.length is None:
            indices = itertools.count()  # infinite: Keras reads it in order, shuffle or not
        elif shuffle:  # Keras shuffles the batch order each epoch
            # (process 0's order in a data-parallel job, so every process reads the same batches)
            indices = distribution.same_order(torch.randperm(self.length, generator=session.generator(None))).tolist()
        else:
            indices = range(self.length)
        if self._workers <= 1:
            return (self.dataset[i] for i in indices)
        reader = ordered_map(self.dataset.__getitem__, indices, self._workers, self.max_queue_size)
        self._open.append(reader)
        return reader

    def on_epoch_begin(self):
        self.dataset.on_epoch_begin()

    def on_epoch_end(self):
        self.dataset.on_epoch_end()

    def close(self):
        for reader in self._open:
            reader.close()  # stops its threads
        self._open = []


def batch_tuple(batch, source: str) -> tuple:
    """A batch as Keras standardizes it: (x,), (x, y) or (x, y, sample_weight); a list is a tuple,
    a lone array or tensor is (x,)."""
    if isinstance(batch, (np.ndarray, torch.Tensor, dict)):
        return (batch,)
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple) or len(batch) not in (1, 2, 3):
        raise ArgumentError(
            f"A {source} must give each batch as a tuple (inputs,), (inputs, targets) or (inputs, targets, "
            f"sample_weights); received {str(batch)[:100]} of type {type(batch).__name__}."
        )
    return batch


def prepare(model, compiled, kind: str, source: str, class_weight=None):
    """The function that turns a raw batch into the step's tensors: [*inputs, *targets, weights]
    for "train" and "test", [*inputs] for "predict"; checked as fit checks arrays."""
    # The embedding-id check reads the model's graph: traced here, on the caller's thread, so
    # the prefetch thread only reads the cache (a first trace there would race the step's).
    model.to_graph()
    def run(raw) -> list:
        batch = batch_tuple(raw, source)
        xs = model_inputs(model, batch[0]) if kind != "predict" else model._prepare_inputs(batch[0])
        check_embedding_ids(model, xs)
        if kind == "predict":
            return xs
        if len(batch) < 2:
            raise ArgumentError(f"A {source} that fit or evaluate reads must yield (inputs, targets) or (inputs, targets, "
                                "sample_weights); this batch holds inputs only.")
        ys = targets(model, batch[1])
        n = check_lengths(xs, ys)
        check_class_ids(model, compiled, ys)
        weights = batch[2] if len(batch) == 3 else None
        if weights is not None and class_weight:
            raise ArgumentError("You cannot specify `class_weight` and `sample_weight` at the same time: the "
                                f"{source} yields sample weights; fold the class weights into them.")
        refuse_weights_with_masks(model, weights, class_weight)
        return [*xs, *ys, sample_weights(n, weights, class_weight, ys)]

    return run


def check_arguments(stream: Stream, call: str, y=None, sample_weight=None, class_weight=None, validation_split=0.0,
                    batch_size=None, shuffle=False) -> None:
    """What Keras 3 refuses (or ignores, with its warning) alongside a stream of batches."""
    source = stream.kind
    for name, value, what in (("y", y, "the targets"), ("sample_weight", sample_weight, "the sample weights")):
        if value is not None:
            raise ArgumentError(f"When providing `x` as a {source}, `{name}` should not be passed. Instead, {what} "
                                f"should be included as part of the {source}.")
    if class_weight and isinstance(stream, GeneratorStream):
        raise ArgumentError(f"Argument `class_weight` is not supported for Python generator inputs, as in Keras. "
                            f"Received: class_weight={class_weight}. Yield sample weights from the generator instead.")
    if validation_split:
        raise ArgumentError(f"Received: validation_split={validation_split} with x given as a {source}; as in Keras, "
                            "validation_split is only supported for arrays. Pass validation_data instead.")
    if batch_size is not None:
        warnings.warn(f"{call}(batch_size={batch_size}) is ignored: a {source} gives its own batches.", stacklevel=4)
    if shuffle and isinstance(stream, GeneratorStream):
        warnings.warn("`shuffle=True` was passed, but will be ignored since the data `x` was provided as a generator. "
                      "The generator is expected to yield already-shuffled data.", stacklevel=4)


def refuse_empty(count: int, source: str) -> None:
    if count == 0:
        raise KcompError(f"The {source} given as x gave no batch; there is nothing to run on.")
