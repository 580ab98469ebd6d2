"""The IMDB movie review sentiment data set, as keras.datasets.imdb gives it.

`load_data` reads Keras's `imdb.npz` (reviews as lists of word ids by frequency rank,
labels 0/1) and prepares it exactly as Keras 3 does: the same shuffle (seed 113), a
start mark, ids shifted by `index_from`, reviews of `maxlen` words or more dropped,
ids outside [skip_top, num_words) replaced by the out-of-vocabulary mark. kcomp does
not download: the file must be where Keras keeps it (see kcomp.config.dataset_dirs).
"""

from pathlib import Path

import numpy as np

from kcomp import config
from kcomp.datasets.npz import load_npz
from kcomp.errors import ArgumentError, KcompError

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz"  # where Keras fetches it
PARTS = ("x_train", "y_train", "x_test", "y_test")


def find(path) -> Path:
    """The data set file: `path` itself when it names an existing file, else in Keras's cache folders."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    for folder in config.dataset_dirs():
        if (folder / candidate.name).is_file():
            return folder / candidate.name
    places = ", ".join(str(folder) for folder in config.dataset_dirs())
    raise KcompError(
        f"{candidate.name} is not on this machine (looked in {places}); kcomp does not download data sets. "
        f"Put the file there (keras.datasets.imdb.load_data() saves it there, or fetch {ORIGIN}), "
        "or pass its path: load_data(path=...)."
    )


def load_data(path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1, oov_char=2,
              index_from=3, **kwargs):
    """((x_train, y_train), (x_test, y_test)): reviews as object arrays of word-id lists, labels 0/1."""
    if kwargs:
        raise ArgumentError(f"imdb.load_data got unexpected argument(s) {sorted(kwargs)}.")
    arrays = load_npz(find(path))
    missing = [name for name in PARTS if name not in arrays]
    if missing:
        raise KcompError(f"{path} has no {missing}; expected Keras's imdb.npz with {list(PARTS)}.")
    rng = np.random.RandomState(seed)
    parts = []
    for x, y in ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])):
        order = np.arange(len(x))
        rng.shuffle(order)  # one generator for both, in this order: Keras's shuffle
        x, y = x[order], y[order]
        lead = [start_char] if start_char is not None else []
        x = [lead + [int(w) + index_from for w in review] for review in x]
        if maxlen:
            kept = [i for i, review in enumerate(x) if len(review) < maxlen]
            x, y = [x[i] for i in kept], y[kept]
        parts.append((x, y))
    if maxlen and not (parts[0][0] and parts[1][0]):
        raise ArgumentError(f"After dropping reviews of maxlen={maxlen} words or more, none is left. Raise maxlen.")
    reviews = parts[0][0] + parts[1][0]
    if not num_words:
        num_words = max(max(review) for review in reviews)
    if oov_char is not None:
        reviews = [[w if skip_top <= w < num_words else oov_char for w in review] for review in reviews]
    else:
        reviews = [[w for w in review if skip_top <= w < num_words] for review in reviews]
    split = len(parts[0][0])
    return (_ragged(reviews[:split]), parts[0][1]), (_ragged(reviews[split:]), parts[1][1])


def _ragged(reviews: list) -> np.ndarray:
    out = np.empty(len(reviews), dtype=object)  # one list per review, as Keras returns them
    out[:] = reviews
    return out
