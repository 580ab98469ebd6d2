"""Keras's utilities: to_categorical, pad_sequences, set_random_seed, a progress bar, PyDataset (Sequence)
and image_dataset_from_directory."""

import numpy as np
import torch

from kcomp.session import set_random_seed
from kcomp.errors import ArgumentError
from kcomp.preprocessing.sequence import pad_sequences  # Keras 3 has it at keras.utils.pad_sequences
from kcomp.utils.image_dataset import image_dataset_from_directory
from kcomp.utils.progbar import Progbar
from kcomp.utils.py_dataset import PyDataset, Sequence


def to_categorical(x, num_classes=None):
    """Class ids -> one-hot rows (Keras semantics: a trailing 1-axis is dropped).

    float64, as Keras 3 returns for numpy and list inputs; training casts targets to float32.
    A torch tensor gives what Keras's torch backend gives for one: an int64 tensor, one more axis,
    num_classes required (ids below 0, which Keras clamps to 0, are refused here).
    """
    if isinstance(x, torch.Tensor):
        if num_classes is None:
            raise ArgumentError("to_categorical of a tensor needs num_classes=..., as Keras's does.")
        if x.numel() and (x.min() < 0 or x.max() >= num_classes):
            raise ArgumentError(f"to_categorical takes class ids in [0, {num_classes}); received {int(x.min())}..{int(x.max())}.")
        return torch.nn.functional.one_hot(x.long(), int(num_classes))
    x = np.asarray(x)
    if x.size and not np.all(np.equal(np.mod(x, 1), 0)):
        raise ArgumentError("to_categorical takes integer class ids; received non-integer values.")
    x = x.astype("int64")
    shape = x.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    x = x.reshape(-1)
    if x.size and x.min() < 0:
        raise ArgumentError(f"to_categorical takes class ids >= 0; received {int(x.min())}.")
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    elif x.size and x.max() >= num_classes:
        raise ArgumentError(f"Received: num_classes={num_classes}, but the data holds class id {int(x.max())}. Raise num_classes.")
    out = np.zeros((x.size, num_classes), dtype="float64")
    out[np.arange(x.size), x] = 1.0
    return out.reshape(*shape, num_classes)


__all__ = ["Progbar", "PyDataset", "Sequence", "image_dataset_from_directory", "pad_sequences", "set_random_seed",
           "to_categorical"]
