"""A data set as the two files `kcomp fit` and `kcomp evaluate` read: train.npz and test.npz.

Each holds arrays `x` and `y` as the loader returns them (Keras's dtypes), with two changes a
model needs before it can train on them, both optional:

- imdb's reviews are ragged lists of word ids; `pad_to` pads or truncates them to one length with
  pad_sequences (Keras's defaults: zeros in front, the start of a long review cut), as the seed's
  sentiment example does. Without it they are padded to the longest review.
- `scale` divides the inputs by a number and makes them float32 (255 for the image sets, 16 for
  digits), as the Keras examples do before fitting.
- `sample_shape` reshapes every input sample, e.g. (64,) for a Dense model on 8x8 digits or
  (28, 28, 1) for a Conv2D model on mnist (Keras's x.reshape before fit).

`synthetic=True` (imdb only) first writes the learnable synthetic set of
kcomp.datasets.imdb.write_synthetic into the output folder (imdb.npz, imdb_word_index.json) and
reads that, so the whole pipeline runs without Keras's file.
"""

from pathlib import Path

import numpy as np

from kcomp.datasets import cifar10, digits, fashion_mnist, imdb, mnist
from kcomp.errors import ArgumentError
from kcomp.preprocessing.sequence import pad_sequences
from kcomp.support.arrays import save_arrays

LOADERS = {"imdb": imdb, "mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10, "digits": digits}
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 2000, 500  # reviews in the synthetic set; an LSTM learns it in a few epochs


def write_fit_files(name, folder, path=None, num_words=None, pad_to=None, synthetic=False, scale=None,
                    sample_shape=None):
    """Write `folder`/train.npz and `folder`/test.npz from data set `name`; returns their paths."""
    if name not in LOADERS:
        raise ArgumentError(f"Received: data set {name!r}. Expected one of {', '.join(sorted(LOADERS))}.")
    text_only = {"num_words": num_words, "pad_to": pad_to, "synthetic": synthetic or None}
    if name != "imdb" and any(v is not None for v in text_only.values()):
        given = next(k for k, v in text_only.items() if v is not None)
        raise ArgumentError(f"Received: {given} for {name}. It applies to imdb's reviews only; leave it out.")
    if name == "digits" and path is not None:
        raise ArgumentError("Received: a path for digits. digits reads scikit-learn's bundled set; leave the path out.")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ArgumentError(f"Received: scale={scale!r}. Expected a positive number to divide the inputs by, e.g. 255.")
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ArgumentError(f"Received: folder {str(folder)!r}, which is (or lies under) a file. Give a folder path.") from None
    if name == "imdb":
        (x_train, y_train), (x_test, y_test) = _imdb(folder, path, num_words, pad_to, synthetic)
    elif name == "digits":
        (x_train, y_train), (x_test, y_test) = digits.load_data()
    else:
        (x_train, y_train), (x_test, y_test) = LOADERS[name].load_data(**({} if path is None else {"path": path}))
    if scale is not None:
        x_train, x_test = (np.asarray(x, np.float32) / np.float32(scale) for x in (x_train, x_test))
    if sample_shape is not None:
        x_train, x_test = (_reshaped(x, tuple(sample_shape), name) for x in (x_train, x_test))
    written = []
    for part, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        target = folder / f"{part}.npz"
        save_arrays(target, {"x": x, "y": y})
        written.append(target)
    return tuple(written)


def _reshaped(x: np.ndarray, shape: tuple, name: str) -> np.ndarray:
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape) or not shape \
            or int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise ArgumentError(f"Received: sample_shape={shape!r} for {name}, whose samples have shape {x.shape[1:]} "
                            f"({int(np.prod(x.shape[1:]))} values). Give positive sizes with that product, "
                            f"e.g. {(int(np.prod(x.shape[1:])),)}.")
    return x.reshape((len(x), *shape))


def _imdb(folder: Path, path, num_words, pad_to, synthetic):
    if pad_to is not None and (isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1):
        raise ArgumentError(f"Received: pad_to={pad_to!r}. Expected a positive number of steps, e.g. 500.")
    if synthetic:
        if path is not None:
            raise ArgumentError("Received: a path and synthetic=True. The synthetic set is written into the output "
                                "folder; give one or the other.")
        words = num_words if num_words is not None else 10000
        path, _ = imdb.write_synthetic(folder / "imdb.npz", n_train=SYNTHETIC_TRAIN, n_test=SYNTHETIC_TEST,
                                       num_words=words, maxlen=pad_to or 400, seed=0)
    (x_train, y_train), (x_test, y_test) = imdb.load_data(path="imdb.npz" if path is None else str(path),
                                                          num_words=num_words)
    length = pad_to if pad_to is not None else max(len(review) for review in (*x_train, *x_test))
    return ((pad_sequences(x_train, maxlen=length), y_train), (pad_sequences(x_test, maxlen=length), y_test))
