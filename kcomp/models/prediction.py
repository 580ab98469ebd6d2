"""predict: the model's executor run over the data in batches, the outputs back as numpy arrays."""

import numpy as np
import torch

from kcomp.ir.types import TORCH_DTYPES
from kcomp.utils.progbar import Progbar


def to_numpy(t: torch.Tensor) -> np.ndarray:
    # numpy has no bfloat16: such outputs come back as float32, which holds every bfloat16 value exactly.
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    """Model.predict on a built model: `x` in batches of `batch_size` (default 32)."""
    from kcomp.callbacks import CallbackList
    from kcomp.training.data import batch_size as checked_batch_size, check_embedding_ids

    batch_size = checked_batch_size(batch_size)
    xs = model._prepare_inputs(x)
    check_embedding_ids(model, xs)
    n = len(xs[0])
    executor, params = model.executor(), model.params()
    batches = range(0, n, batch_size)
    if steps is not None:
        batches = batches[:steps]
    bar = Progbar(len(batches), verbose=0 if verbose == 0 else 1)
    callback_list = CallbackList(callbacks, model)
    callback_list.call("on_predict_begin")
    pieces: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for step, start in enumerate(batches, 1):
            callback_list.call("on_predict_batch_begin", step - 1)
            outs = executor.run([t[start : start + batch_size] for t in xs], params)
            pieces.append([o.cpu() for o in outs])
            callback_list.call("on_predict_batch_end", step - 1, {"outputs": pieces[-1][0] if len(outs) == 1 else pieces[-1]})
            bar.update(step)
    callback_list.call("on_predict_end")
    outs = [to_numpy(torch.cat([p[i] for p in pieces])) if pieces else empty_output(model, i) for i in range(len(model.outputs))]
    return outs[0] if len(outs) == 1 else outs  # Keras unpacks Model(x, [y])'s one output too


def empty_output(model, i: int) -> np.ndarray:
    """predict on 0 samples: an empty array of output i's shape, (0, ...)."""
    shape = model.outputs[i].shape[1:]
    if any(d is None for d in shape):
        shape = tuple(0 if d is None else d for d in shape)
    return np.zeros((0, *shape), dtype=to_numpy(torch.zeros((), dtype=TORCH_DTYPES[model.outputs[i].dtype])).dtype)
