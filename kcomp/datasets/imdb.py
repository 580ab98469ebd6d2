"""The IMDB movie review sentiment data set, as keras.datasets.imdb gives it.

`load_data` reads Keras's `imdb.npz` (reviews as lists of word ids by frequency rank,
labels 0/1) and prepares it exactly as Keras 3 does: the same shuffle (seed 113), a
start mark, ids shifted by `index_from`, reviews of `maxlen` words or more dropped,
ids outside [skip_top, num_words) replaced by the out-of-vocabulary mark.
`get_word_index` reads Keras's `imdb_word_index.json` ({word: rank}). kcomp does not
download: the files are found as kcomp.datasets.locate says (a path you give, the kcomp
data folder $KCOMP_DATA_DIR or ~/.kcomp/datasets, Keras's cache folders).

`write_synthetic` writes a small sentiment set in the same two formats, one a model can
learn, for tests and examples on a machine without the real files.
"""

import io
import json
from pathlib import Path

import numpy as np

from kcomp.datasets.locate import KERAS_ORIGIN, DataSet, Place, locate
from kcomp.datasets.npz import load_npz, members
from kcomp.errors import ArgumentError, KcompError
from kcomp.support.files import write_bytes_atomic, write_text_atomic

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


# The synthetic set's vocabulary by rank: IMDB's ten most frequent words, then ten words that mark
# a positive review and ten that mark a negative one, then plain filler words.
COMMON = ("the", "and", "a", "of", "to", "is", "br", "in", "it", "i")
POSITIVE = ("great", "excellent", "wonderful", "best", "loved", "brilliant", "perfect", "amazing", "superb", "beautiful")
NEGATIVE = ("worst", "awful", "boring", "terrible", "waste", "poor", "bad", "dull", "horrible", "stupid")
NAMED = COMMON + POSITIVE + NEGATIVE
POSITIVE_IDS = np.arange(len(COMMON) + 1, len(COMMON) + len(POSITIVE) + 1)  # ranks 11-20
NEGATIVE_IDS = POSITIVE_IDS + len(POSITIVE)                                   # ranks 21-30
LABEL_NOISE = 0.1  # the share of a review's sentiment words drawn from the other label's


def write_synthetic(path, n_train=1000, n_test=500, num_words=2000, maxlen=200, seed=0, word_index_path=None):
    """Write a learnable sentiment set in Keras's imdb.npz format, and its imdb_word_index.json.

    Reviews are lists of word ranks 1 .. num_words - 1 (as in Keras's file: load_data adds
    index_from), of random lengths from min(10, maxlen) to maxlen words. Filler words follow
    Zipf's law, as real text does; about one word in ten (at least three) is a sentiment word,
    from its label's ten nine times in ten and from the other label's otherwise. Labels are
    half 0, half 1. A model that learns which ids carry the label (Embedding with pooling or
    an LSTM) gets well above chance; the best possible accuracy is about 97%.
    The word index goes to `word_index_path`, by default imdb_word_index.json beside `path`.
    Both are written atomically; returns (path, word_index_path).
    """
    for name, value, least in (("n_train", n_train, 1), ("n_test", n_test, 1), ("num_words", num_words, len(NAMED) + 2),
                               ("maxlen", maxlen, 3)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ArgumentError(f"write_synthetic: Received: {name}={value!r}. Expected an integer >= {least}.")
    path = Path(path)
    word_index_path = Path(word_index_path) if word_index_path is not None else path.with_name("imdb_word_index.json")
    rng = np.random.default_rng(seed)
    filler = np.concatenate([np.arange(1, len(COMMON) + 1), np.arange(len(NAMED) + 1, num_words)])
    weights = 1.0 / filler
    arrays = {}
    for part, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
        lengths = rng.integers(min(10, maxlen), maxlen + 1, n)
        arrays[f"x_{part}"] = _ragged([_review(rng, label, length, filler, weights / weights.sum())
                                       for label, length in zip(labels, lengths)])
        arrays[f"y_{part}"] = labels
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())
    words = {word: rank for rank, word in enumerate(NAMED, start=1)}
    words.update({f"word{rank}": rank for rank in range(len(NAMED) + 1, num_words)})
    write_text_atomic(word_index_path, json.dumps(words))
    return path, word_index_path


def _review(rng, label: int, length: int, filler: np.ndarray, p: np.ndarray) -> list:
    words = rng.choice(filler, size=length, p=p)
    marks = min(length, max(3, length // 10))
    own, other = (POSITIVE_IDS, NEGATIVE_IDS) if label else (NEGATIVE_IDS, POSITIVE_IDS)
    from_own = rng.random(marks) >= LABEL_NOISE
    words[rng.choice(length, size=marks, replace=False)] = np.where(from_own, rng.choice(own, marks), rng.choice(other, marks))
    return [int(w) for w in words]
