"""predict: the model's executor run over the data in batches, the outputs back as numpy arrays."""

import numpy as np
import torch

from kcomp import distribution
from kcomp.ir.types import TORCH_DTYPES
from kcomp.training.data import check_embedding_ids
from kcomp.utils.progbar import Progbar


def to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: such outputs come back as float32, which holds every bfloat16 value exactly.
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def batch_runner(model):
    """A function from a batch's inputs to the model's outputs: the executor's run; in a
    data-parallel job this process's share of the batch, the outputs of every process gathered
    (kcomp/distribution/sharded_predict.py)."""
    executor, params = model.executor(), model.params()
    parallel = distribution.distribution()
    if parallel is None or parallel.world == 1:
        return lambda xs: executor.run(xs, params)
    from kcomp.distribution.sharded_predict import sharded_run

    return lambda xs: sharded_run(lambda share: executor.run(share, params), xs, parallel.group)


def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    """Model.predict on a built model: `x` in batches of `batch_size` (default 32), or the batches
    of a generator or PyDataset (their inputs; targets they hold are ignored, as in Keras)."""
    from kcomp.callbacks import CallbackList

    run = batch_runner(model)
    batches, count, close = _batches(model, x, batch_size, steps)
    bar = Progbar(count, verbose=0 if verbose == 0 else 1)
    callback_list = CallbackList(callbacks, model)
    callback_list.call("on_predict_begin")
    pieces: list[list[torch.Tensor]] = []
    try:
        with torch.inference_mode():
            for step, xs in enumerate(batches, 1):
                callback_list.call("on_predict_batch_begin", step - 1)
                outs = run(xs)
                pieces.append([o.cpu() for o in outs])
                callback_list.call("on_predict_batch_end", step - 1, {"outputs": pieces[-1][0] if len(outs) == 1 else pieces[-1]})
                bar.update(step, finalize=count is not None and step >= count)
    finally:
        close()
    if count is None or len(pieces) < count:
        bar.update(len(pieces), finalize=True)
    callback_list.call("on_predict_end")
    outs = [to_numpy(_joined([p[i] for p in pieces])) if pieces else empty_output(model, i) for i in range(len(model.outputs))]
    return outs[0] if len(outs) == 1 else outs  # Keras unpacks Model(x, [y])'s one output too


def predict_batch(model, x):
    """Model.predict_on_batch on a built model: `x` (arrays) run as one batch, as Keras runs it: no
    progress bar, no callbacks, no batching (predict's cost around a small batch's run)."""
    xs = model._prepare_inputs(x)
    if len(xs[0]) == 0:
        return predict(model, x, batch_size=1, verbose=0)  # nothing to run: predict's empty outputs
    check_embedding_ids(model, xs)
    with torch.inference_mode():
        outs = [to_numpy(o.cpu()) for o in batch_runner(model)(xs)]
    return outs[0] if len(outs) == 1 else outs


def _joined(pieces: list[torch.Tensor]) -> torch.Tensor:
    """The batches' outputs as one tensor; one batch's as it is (predict_on_batch: no copy)."""
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


def _batches(model, x, batch_size, steps):
    """(the batches of inputs, their count when known, what ends the reading): slices of arrays,
    or a stream's batches prepared on the prefetch thread (kcomp/training/prefetch.py)."""
    from kcomp.training.data import batch_size as checked_batch_size
    from kcomp.training.prefetch import Prefetcher
    from kcomp.training.runners import device_of
    from kcomp.training.streams import check_arguments, prepare, stream_of

    stream = stream_of(x)
    if stream is None:
        batch_size = checked_batch_size(batch_size)
        xs = model._prepare_inputs(x)
        check_embedding_ids(model, xs)
        starts = range(0, len(xs[0]), batch_size)[:steps]
        return ([t[s : s + batch_size] for t in xs] for s in starts), len(starts), lambda: None
    check_arguments(stream, "predict", batch_size=batch_size)
    stream.on_epoch_begin()
    device = device_of(model)
    prefetcher = Prefetcher(stream.new_pass(False), prepare(model, None, "predict", stream.kind), device, steps,
                            stream.max_queue_size)

    def close():
        prefetcher.close()
        stream.on_epoch_end()
        stream.close()

    return prefetcher, steps or stream.length, close


def empty_output(model, i: int) -> np.ndarray:
    """predict on 0 samples: an empty array of output i's shape, (0, ...)."""
    shape = model.outputs[i].shape[1:]
    if any(d is None for d in shape):
        shape = tuple(0 if d is None else d for d in shape)
    return np.zeros((0, *shape), dtype=to_numpy(torch.zeros((), dtype=TORCH_DTYPES[model.outputs[i].dtype])).dtype)
