"""to_categorical and pad_sequences with Keras's semantics."""

import numpy as np
import pytest

from kcomp.errors import ArgumentError
from kcomp.preprocessing import sequence
from kcomp.utils import to_categorical


def test_to_categorical_one_hot():
    y = to_categorical([0, 2, 1, 2])
    assert y.dtype == np.float64  # Keras 3's dtype for numpy and list inputs (tests/test_keras_api.py checks it against Keras)
    np.testing.assert_array_equal(y, np.eye(3)[[0, 2, 1, 2]])


def test_to_categorical_num_classes_and_trailing_axis():
    y = to_categorical(np.array([[1], [3]]), num_classes=5)
    assert y.shape == (2, 5) and y[1, 3] == 1 and y.sum() == 2
    assert to_categorical(np.array([[0, 1], [1, 0]])).shape == (2, 2, 2)


@pytest.mark.parametrize("bad, kwargs", [([0, 5], {"num_classes": 3}), ([-1, 0], {}), ([0.5], {})])
def test_to_categorical_rejects_bad_ids(bad, kwargs):
    with pytest.raises(ArgumentError):
        to_categorical(bad, **kwargs)


SEQS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]


@pytest.mark.parametrize(
    "kwargs, want",
    [
        ({}, [[0, 0, 1, 2, 3], [0, 0, 0, 4, 5], [6, 7, 8, 9, 10]]),
        ({"padding": "post"}, [[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [6, 7, 8, 9, 10]]),
        ({"maxlen": 3}, [[1, 2, 3], [0, 4, 5], [8, 9, 10]]),
        ({"maxlen": 3, "truncating": "post"}, [[1, 2, 3], [0, 4, 5], [6, 7, 8]]),
        ({"maxlen": 4, "value": -1, "padding": "post", "truncating": "post"}, [[1, 2, 3, -1], [4, 5, -1, -1], [6, 7, 8, 9]]),
    ],
)
def test_pad_sequences(kwargs, want):
    got = sequence.pad_sequences(SEQS, **kwargs)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, np.array(want))


def test_pad_sequences_empty_and_dtype():
    got = sequence.pad_sequences([[], [1.5]], dtype="float32", maxlen=2)
    np.testing.assert_array_equal(got, [[0, 0], [0, 1.5]])


@pytest.mark.parametrize("kwargs", [{"padding": "middle"}, {"truncating": "both"}, {"maxlen": -1}])
def test_pad_sequences_bad_arguments(kwargs):
    with pytest.raises(ArgumentError):
        sequence.pad_sequences(SEQS, **kwargs)


def test_progbar_redraws_at_most_every_interval_and_reads_values_only_then():
    """A redraw reads the loss back from the device: a fast training loop on a terminal must not
    pay that every step (Keras redraws at most every 0.05 s), but the final line always shows."""
    import io

    from kcomp.utils.progbar import Progbar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    reads = []

    def values():
        reads.append(1)
        return {"loss": 0.5}

    stream = Terminal()
    bar = Progbar(1000, stream=stream, interval=3600.0)
    for step in range(1, 1000):
        bar.update(step, values, finalize=False)
    assert len(reads) == 1  # the first update draws; the hour-long interval holds the rest back
    bar.update(1000, values, finalize=True)
    assert len(reads) == 2 and stream.getvalue().endswith("loss: 0.5000\n")
