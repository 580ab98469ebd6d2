"""The seed document's code runs as written, `keras` replaced by `kcomp`.

The sentiment example reads IMDB through `imdb.load_data`; with no network, the test writes a
small learnable set in Keras's imdb.npz format (kcomp.datasets.imdb.write_synthetic: reviews as
object arrays of word-id lists) where Keras keeps it, and checks that kcomp prepares it exactly as
Keras 3 does from the same file.
"""

import math

import numpy as np
import pytest

from kcomp.errors import KcompError


def write_imdb(path):
    from kcomp.datasets import imdb

    # Reviews of 10 to 700 words over 12000 ranks: maxlen=300 drops some, num_words=10000 marks some out of vocabulary.
    imdb.write_synthetic(path, n_train=40, n_test=24, num_words=12000, maxlen=700, seed=0)


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    (tmp_path / "datasets").mkdir()
    write_imdb(tmp_path / "datasets" / "imdb.npz")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("KCOMP_DATA_DIR", str(tmp_path / "kcomp-data"))  # empty: Keras's cache is where it is found
    return tmp_path


@pytest.mark.parametrize("kwargs", [dict(num_words=10000), dict(num_words=500, skip_top=20, maxlen=300),
                                    dict(start_char=None, oov_char=None, index_from=0, seed=5)])
def test_imdb_load_data_prepares_the_file_as_keras_does(keras_home, monkeypatch, kwargs):
    pytest.importorskip("keras")
    from keras.src.datasets import imdb as keras_imdb

    from kcomp.datasets import imdb

    # Keras would check the real file's hash and download; point it at the same local file.
    monkeypatch.setattr(keras_imdb, "get_file", lambda *a, **k: str(keras_home / "datasets" / "imdb.npz"))
    ours, theirs = imdb.load_data(**kwargs), keras_imdb.load_data(**kwargs)
    for (x_a, y_a), (x_b, y_b) in zip(ours, theirs):
        assert x_a.dtype == x_b.dtype == object and len(x_a) == len(x_b)
        assert all(list(a) == list(b) for a, b in zip(x_a, x_b))
        np.testing.assert_array_equal(y_a, y_b)


def test_imdb_load_data_says_where_the_file_belongs(tmp_path, monkeypatch):
    from kcomp.datasets import imdb

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("KCOMP_DATA_DIR", str(tmp_path / "kcomp-data"))
    with pytest.raises(KcompError, match="does not download.*imdb.npz|imdb.npz.*does not download"):
        imdb.load_data()


def test_imdb_file_that_names_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    """An object array's pickle may name any function; only numpy's array rebuilders are resolved."""
    import pickle

    from kcomp.datasets import imdb

    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(canary)!r}, 'w').write('ran')",))

    x = np.empty(2, dtype=object)
    x[:] = [Payload(), [1, 2]]
    with open(tmp_path / "imdb.npz", "wb") as f:
        np.savez(f, x_train=x, y_train=np.zeros(2), x_test=x, y_test=np.zeros(2))
    with pytest.raises(KcompError, match="builtins.exec"):
        imdb.load_data(path=str(tmp_path / "imdb.npz"))
    assert not canary.exists()
    assert pickle  # the payload above is what np.savez pickles


@pytest.mark.slow
def test_seed_sentiment_example_runs_as_written(keras_home):
    from kcomp.datasets import imdb

    # A set large enough to learn from (1000 reviews; an LSTM reaches about 99% in this test).
    imdb.write_synthetic(keras_home / "datasets" / "imdb.npz", n_train=1000, n_test=200, num_words=10000,
                         maxlen=400, seed=1)

    # The seed's code with `keras` replaced by `kcomp`. The seed uses `sequence` without importing
    # it (it fails the same way in Keras); the one added line is that import.
    from kcomp.models import Sequential
    from kcomp.layers import Embedding, LSTM, Dense
    from kcomp.preprocessing import sequence

    max_features = 10000
    max_len = 500

    (x_train, y_train), (x_test, y_test) = imdb.load_data(num_words=max_features)

    x_train = sequence.pad_sequences(x_train, maxlen=max_len)
    x_test = sequence.pad_sequences(x_test, maxlen=max_len)

    model = Sequential()
    model.add(Embedding(max_features, 32, input_length=max_len))
    model.add(LSTM(32))
    model.add(Dense(1, activation='sigmoid'))

    model.compile(optimizer='rmsprop', loss='binary_crossentropy', metrics=['accuracy'])

    history = model.fit(x_train, y_train, epochs=10, batch_size=32, validation_split=0.2)

    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert len(history.history["loss"]) == 10 and all(math.isfinite(v) for v in history.history["loss"])
    assert history.history["loss"][-1] < history.history["loss"][0]  # it learns the training reviews
    assert history.history["val_accuracy"][-1] > 0.8  # and generalizes: chance is 0.5 on the balanced set
    assert model.evaluate(x_test, y_test, return_dict=True, verbose=0)["accuracy"] > 0.8
