"""The IMDB movie review sentiment data set, as keras.datasets.imdb gives it.

`load_data` reads Keras's `imdb.npz` (reviews as lists of word ids by frequency rank,
labels 0/1) and prepares it exactly as Keras 3 does: the same shuffle (seed 113), a
start mark, ids shifted by `index_from`, reviews of `maxlen` words or more dropped,
ids outside [skip_top, num_words) replaced by the out-of-vocabulary mark.
`get_word_index` reads Keras's `imdb_word_index.json` ({word: rank}). kcomp does not
download: the files are found as kcomp.datasets.locate says (a path you give, the kcomp
data folder $KCOMP_DATA_DIR or ~/.kcomp/datasets, Keras's cache folders).
"""

import json

import numpy as np

from kcomp.datasets.locate import KERAS_ORIGIN, DataSet, Place, locate
from kcomp.datasets.npz import load_npz, members
from kcomp.errors import ArgumentError, KcompError

REVIEWS = DataSet("imdb.load_data", (Place("imdb.npz"),), f"fetch {KERAS_ORIGIN}imdb.npz")
WORD_INDEX = DataSet("imdb.get_word_index", (Place("imdb_word_index.json"),), f"fetch {KERAS_ORIGIN}imdb_word_index.json")
PARTS = ("x_train", "y_train", "x_test", "y_test")


def load_data(path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1, oov_char=2,
              index_from=3, **kwargs):
    """((x_train, y_train), (x_test, y_test)): reviews as object arrays of word-id lists, labels 0/1."""
    if kwargs:
        raise ArgumentError(f"imdb.load_data got unexpected argument(s) {sorted(kwargs)}.")
    found = locate(REVIEWS, path)
    x_train, y_train, x_test, y_test = members(load_npz(found), PARTS, found)
    rng = np.random.RandomState(seed)
    parts = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
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


def get_word_index(path="imdb_word_index.json") -> dict:
    """{word: rank} from Keras's imdb_word_index.json; rank r is id r + index_from in load_data's reviews."""
    found = locate(WORD_INDEX, path)
    try:
        index = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KcompError(f"cannot read {found}: {e}. Expected Keras's imdb_word_index.json.") from None
    if not (isinstance(index, dict) and all(isinstance(r, int) and not isinstance(r, bool) for r in index.values())):
        raise KcompError(f"{found} is not a word index: expected a JSON object of word: rank (an integer).")
    return index

