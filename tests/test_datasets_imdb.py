"""kcomp.datasets.imdb: the synthetic sentiment set in Keras's IMDB formats, and the word index.

write_synthetic's files are read by Keras 3's own imdb loaders (its get_file pointed at the local
files) and give what kcomp's give; a small Embedding + pooling model learns them well above chance.
load_data against Keras on other files, and its refusal of code: tests/test_seed_document.py.
"""

import json

import numpy as np
import pytest

from kcomp.datasets import imdb
from kcomp.errors import ArgumentError, KcompError


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("KCOMP_DATA_DIR", str(folder))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    return folder


def test_write_synthetic_writes_keras_imdb_formats(data_dir):
    npz, index_file = imdb.write_synthetic(data_dir / "imdb.npz", n_train=60, n_test=30, num_words=300, maxlen=50, seed=3)
    assert index_file == data_dir / "imdb_word_index.json" and npz.is_file()
    with np.load(npz, allow_pickle=True) as f:  # a file this test wrote
        x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    assert x_train.dtype == object and x_train.shape == (60,) and x_test.shape == (30,)
    assert all(isinstance(review, list) and all(type(w) is int for w in review) for review in x_train)
    lengths = [len(review) for review in x_train]
    assert min(lengths) >= 10 and max(lengths) <= 50 and len(set(lengths)) > 10
    assert min(min(r) for r in x_train) >= 1 and max(max(r) for r in x_train) < 300
    assert y_train.dtype == np.int64 and sorted(set(y_train)) == [0, 1] and y_train.sum() == 30 and y_test.sum() == 15
    index = json.loads(index_file.read_text())
    assert len(index) == 299 and sorted(index.values()) == list(range(1, 300)) and index["the"] == 1
    # The marks of a positive review are mostly positive words.
    positive, negative = set(imdb.POSITIVE_IDS), set(imdb.NEGATIVE_IDS)
    for review, label in zip(x_train, y_train):
        own = sum(w in (positive if label else negative) for w in review)
        other = sum(w in (negative if label else positive) for w in review)
        assert own + other >= 3


@pytest.mark.parametrize("kwargs", [dict(), dict(num_words=100, skip_top=5, maxlen=40), dict(index_from=0, start_char=None, seed=9)])
def test_synthetic_set_loads_in_kcomp_as_in_keras(data_dir, monkeypatch, kwargs):
    pytest.importorskip("keras")
    from keras.src.datasets import imdb as keras_imdb

    npz, index_file = imdb.write_synthetic(data_dir / "imdb.npz", n_train=50, n_test=20, num_words=400, maxlen=60)
    monkeypatch.setattr(keras_imdb, "get_file", lambda fname, **k: str(data_dir / fname))
    for (x_a, y_a), (x_b, y_b) in zip(imdb.load_data(**kwargs), keras_imdb.load_data(**kwargs)):
        assert len(x_a) == len(x_b) and all(list(a) == list(b) for a, b in zip(x_a, x_b))
        np.testing.assert_array_equal(y_a, y_b)
    assert imdb.get_word_index() == keras_imdb.get_word_index()


def test_the_word_index_decodes_reviews_as_keras_documents(data_dir):
    imdb.write_synthetic(data_dir / "imdb.npz", n_train=10, n_test=4, num_words=100, maxlen=30)
    (x_train, y_train), _ = imdb.load_data()
    words = {rank + 3: word for word, rank in imdb.get_word_index().items()}  # index_from=3
    words.update({1: "[START]", 2: "[OOV]"})
    decoded = [words[i] for i in x_train[0]]
    assert decoded[0] == "[START]"
    marks = set(imdb.POSITIVE if y_train[0] else imdb.NEGATIVE)
    assert any(word in marks for word in decoded)


def test_the_synthetic_set_is_learnable_by_embedding_and_pooling(data_dir):
    from kcomp import optimizers
    from kcomp.layers import Dense, Embedding, GlobalAveragePooling2D, Input, Reshape
    from kcomp.models import Sequential
    from kcomp.preprocessing import sequence

    length, words = 80, 1000
    imdb.write_synthetic(data_dir / "imdb.npz", n_train=400, n_test=200, num_words=words, maxlen=length, seed=0)
    (x_train, y_train), (x_test, y_test) = imdb.load_data(num_words=words)
    x_train, x_test = sequence.pad_sequences(x_train, maxlen=length), sequence.pad_sequences(x_test, maxlen=length)
    model = Sequential([Input(shape=(length,)), Embedding(words, 8), Reshape((length, 1, 8)), GlobalAveragePooling2D(),
                        Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, batch_size=32, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert accuracy >= 0.85, accuracy  # chance is 0.5; measured 0.96


def test_write_synthetic_is_deterministic_by_seed(tmp_path):
    def reviews(seed, name):
        imdb.write_synthetic(tmp_path / name, n_train=8, n_test=4, num_words=100, maxlen=20, seed=seed)
        (x, y), _ = imdb.load_data(path=tmp_path / name)
        return [list(r) for r in x], list(y)

    assert reviews(1, "a.npz") == reviews(1, "b.npz") != reviews(2, "c.npz")


@pytest.mark.parametrize("kwargs", [dict(num_words=20), dict(maxlen=2), dict(n_train=0), dict(n_test=2.5)])
def test_write_synthetic_bad_arguments_are_argument_errors(tmp_path, kwargs):
    with pytest.raises(ArgumentError, match="Received: " + next(iter(kwargs))):
        imdb.write_synthetic(tmp_path / "imdb.npz", **kwargs)
    assert not (tmp_path / "imdb.npz").exists()


def test_get_word_index_missing_or_not_an_index_is_a_kcomp_error(data_dir, tmp_path):
    with pytest.raises(KcompError, match=r"imdb_word_index.json in .*does not download|does not download.*imdb_word_index.json"):
        imdb.get_word_index()
    bad = tmp_path / "words.json"
    bad.write_text('["the", "and"]')
    with pytest.raises(KcompError, match="not a word index"):
        imdb.get_word_index(path=bad)
    bad.write_text("{not json")
    with pytest.raises(KcompError, match="cannot read"):
        imdb.get_word_index(path=bad)
