"""fit / evaluate / predict fed by generators, iterators and PyDatasets (kcomp/training/streams.py,
feeds.py, prefetch.py): the same numbers as the arrays of the same batches, Keras 3's step counts
and errors, the producer's exceptions raised as themselves, and no thread left running."""

import io
import threading
import warnings

import numpy as np
import pytest
import torch

import kcomp
from kcomp import callbacks, optimizers
from kcomp.errors import ArgumentError, KcompError
from kcomp.layers import Dense, Input
from kcomp.models import Sequential
from kcomp.utils import Progbar, PyDataset

RNG = np.random.default_rng(15)
X = RNG.normal(size=(10, 3)).astype("float32")
Y = RNG.normal(size=(10, 2)).astype("float32")
W = RNG.uniform(0.5, 2.0, size=10).astype("float32")
BATCHES = [slice(0, 4), slice(4, 8), slice(8, 10)]  # the last batch is partial: 4, 4, 2


def batches(weighted=False, x=X, y=Y):
    for s in BATCHES:
        yield (x[s], y[s], W[s]) if weighted else (x[s], y[s])


def model(backend="reference", seed=3):
    kcomp.utils.set_random_seed(seed)
    m = Sequential([Input((3,)), Dense(4, activation="tanh"), Dense(2)])
    m.compile(optimizer=optimizers.Adam(learning_rate=0.05), loss="mse", metrics=["mae"], backend=backend)
    return m


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith(("kcomp-prefetch", "kcomp-pydataset")) and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left():
    yield
    assert prefetch_threads() == []


class Batches(PyDataset):
    """The BATCHES of X, Y as a PyDataset, recording what fit asks of it."""

    def __init__(self, weighted=False, **kwargs):
        super().__init__(**kwargs)
        self.weighted, self.read, self.begins, self.ends = weighted, [], 0, 0

    def __len__(self):
        return len(BATCHES)

    def __getitem__(self, index):
        self.read.append(index)
        s = BATCHES[index]
        return (X[s], Y[s], W[s]) if self.weighted else (X[s], Y[s])

    def on_epoch_begin(self):
        self.begins += 1

    def on_epoch_end(self):
        self.ends += 1


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("weighted", [False, True])
def test_generator_fit_equals_the_array_fit_of_the_same_batches(backend, weighted):
    """One epoch over a generator of batches 4, 4, 2 (the compiled plan takes each size at run time)
    against fit on the arrays with batch_size=4, unshuffled: the same weights and History."""
    ours, arrays = model(backend), model(backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras's warning: shuffle=True is ignored for a generator
        history = ours.fit(batches(weighted), epochs=1, verbose=0)
    expected = arrays.fit(X, Y, batch_size=4, epochs=1, shuffle=False, verbose=0, sample_weight=W if weighted else None)
    for a, b in zip(ours.get_weights(), arrays.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert history.history.keys() == expected.history.keys()
    for key in expected.history:
        np.testing.assert_allclose(history.history[key], expected.history[key], rtol=1e-5)


def test_pydataset_fit_equals_arrays_over_epochs_and_calls_the_epoch_hooks():
    data = Batches(weighted=True)
    ours, arrays = model(), model()
    history = ours.fit(data, epochs=3, shuffle=False, verbose=0)
    expected = arrays.fit(X, Y, sample_weight=W, batch_size=4, epochs=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    for a, b in zip(ours.get_weights(), arrays.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (data.begins, data.ends) == (3, 3)
    assert data.read == [0, 1, 2] * 3


def test_pydataset_shuffle_reorders_the_batches_each_epoch():
    data = Batches()
    kcomp.utils.set_random_seed(0)
    model().fit(data, epochs=6, verbose=0)
    passes = [data.read[i : i + 3] for i in range(0, 18, 3)]
    assert all(sorted(p) == [0, 1, 2] for p in passes)
    assert len({tuple(p) for p in passes}) > 1


def test_pydataset_workers_read_in_order_on_threads():
    slow = Batches(workers=3, max_queue_size=2)
    ours, one = model(), model()
    ours.fit(slow, epochs=2, shuffle=False, verbose=0)
    one.fit(Batches(), epochs=2, shuffle=False, verbose=0)
    for a, b in zip(ours.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_evaluate_and_predict_from_generators_equal_arrays():
    m = model()
    m.fit(X, Y, epochs=1, verbose=0)
    expected = m.evaluate(X, Y, batch_size=4, verbose=0, return_dict=True)
    got = m.evaluate(batches(), verbose=0, return_dict=True)
    assert got.keys() == expected.keys()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6)
    np.testing.assert_allclose(m.evaluate(Batches(), verbose=0), m.evaluate(X, Y, batch_size=4, verbose=0), rtol=1e-6)
    want = m.predict(X, verbose=0)
    for yielded in ((X[s] for s in BATCHES), ((X[s],) for s in BATCHES), batches(), iter([X[:4], X[4:]])):
        np.testing.assert_allclose(m.predict(yielded, verbose=0), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.predict(Batches(), verbose=0), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(m.predict(batches(), steps=2, verbose=0), want[:8], rtol=1e-6, atol=1e-7)


def test_a_model_without_an_input_is_built_from_the_first_batch():
    m = Sequential([Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = m.fit(batches(), verbose=0)
    assert len(history.history["loss"]) == 1 and m.predict(batches(), verbose=0).shape == (10, 2)


def _batches_per_epoch(lib, fit_model, data, **kwargs):
    counts = []

    class Count(lib.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            counts.append(0)

        def on_train_batch_end(self, batch, logs=None):
            counts[-1] += 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit_model.fit(data, verbose=0, callbacks=[Count()], **kwargs)
    history.warnings = [str(w.message) for w in caught]
    return counts[: len(history.history["loss"])], history


@pytest.mark.parametrize("source", ["generator", "PyDataset"])
def test_steps_per_epoch_reads_on_across_epochs_as_keras(source):
    """5 batches, steps_per_epoch=2, 3 epochs: Keras 3 trains 2, 2, 1 batches (the pass ends in the
    third epoch) and goes on from where the last epoch stopped; so does kcomp, on the same data."""
    keras = pytest.importorskip("keras")

    def data(lib):
        x, y = X[:10], Y[:10]
        if source == "generator":
            return ((x[i : i + 2], y[i : i + 2]) for i in range(0, 10, 2))

        class Pairs(lib.utils.PyDataset):
            def __len__(self):
                return 5

            def __getitem__(self, i):
                return x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2]

        return Pairs()

    theirs = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    theirs.compile(optimizer="sgd", loss="mse")
    ours = Sequential([Input((3,)), Dense(2)])
    ours.compile(optimizer="sgd", loss="mse")
    theirs.set_weights(ours.get_weights())
    kwargs = dict(epochs=3, steps_per_epoch=2, shuffle=False)
    keras_counts, keras_history = _batches_per_epoch(keras, theirs, data(keras), **kwargs)
    our_counts, our_history = _batches_per_epoch(kcomp, ours, data(kcomp), **kwargs)
    assert our_counts == keras_counts == [2, 2, 1]
    np.testing.assert_allclose(our_history.history["loss"], keras_history.history["loss"], rtol=1e-5)
    assert our_history.params["steps"] == keras_history.params["steps"] == 2


def test_a_finite_generator_runs_until_exhausted_then_training_stops():
    counts, history = _batches_per_epoch(kcomp, model(), batches(), epochs=3, shuffle=False)
    assert any("ran out of data; interrupting training" in w for w in history.warnings)
    assert counts == [3] and history.params["steps"] is None and len(history.history["loss"]) == 1


def test_validation_data_as_a_generator_and_as_a_pydataset():
    ours, arrays = model(), model()
    history = ours.fit(X, Y, batch_size=4, shuffle=False, epochs=2, verbose=0, validation_data=Batches())
    expected = arrays.fit(X, Y, batch_size=4, shuffle=False, epochs=2, verbose=0, validation_data=(X, Y))
    np.testing.assert_allclose(history.history["val_loss"], expected.history["val_loss"], rtol=1e-5)
    one = model().fit(X, Y, batch_size=4, shuffle=False, epochs=1, verbose=0, validation_data=batches())
    np.testing.assert_allclose(one.history["val_loss"], expected.history["val_loss"][:1], rtol=1e-5)


def test_class_weight_with_a_pydataset_weighs_as_sample_weight():
    ids = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])
    onehot = np.eye(2, dtype="float32")[ids]

    class Labeled(PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return X[BATCHES[i]], onehot[BATCHES[i]]

    ours, arrays = model(), model()
    ours.fit(Labeled(), class_weight={0: 0.5, 1: 2.0}, shuffle=False, verbose=0)
    arrays.fit(X, onehot, batch_size=4, shuffle=False, verbose=0, sample_weight=np.where(ids == 1, 2.0, 0.5))
    for a, b in zip(ours.get_weights(), arrays.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(y=Y), "`y` should not be passed"),
    (dict(sample_weight=W), "`sample_weight` should not be passed"),
    (dict(class_weight={0: 1.0}), "class_weight"),
    (dict(validation_split=0.2), "validation_split"),
])
def test_what_keras_refuses_with_a_generator(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        model().fit(batches(), verbose=0, **kwargs)


def test_bad_streams_are_refused():
    m = model()
    with pytest.raises(ArgumentError, match="tuple"):
        m.fit(iter([(X, Y, W, W)]), verbose=0, shuffle=False)
    with pytest.raises(ArgumentError, match="inputs only"):
        m.fit(iter([(X,)]), verbose=0, shuffle=False)
    with pytest.raises(KcompError, match="no batch"):
        m.fit(iter([]), verbose=0, shuffle=False)
    with pytest.raises(ArgumentError, match="use_multiprocessing"):
        m.fit(Batches(use_multiprocessing=True), verbose=0)
    with pytest.raises(KcompError, match="NaN"):
        m.fit(iter([(X, Y), (X * np.nan, Y)]), verbose=0, shuffle=False)
    with pytest.warns(UserWarning, match="batch_size=4"):
        m.evaluate(batches(), batch_size=4, verbose=0)


def test_an_exception_in_the_generator_is_raised_as_itself_with_its_traceback():
    class Broken(Exception):
        pass

    def failing_source():
        yield X[:4], Y[:4]
        raise Broken("disk gone")

    m = model()
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(Broken, match="disk gone") as info:
        m.fit(failing_source(), epochs=2, verbose=0, shuffle=False)
    assert any(entry.name == "failing_source" for entry in info.traceback)
    assert any(not np.array_equal(a, b) for a, b in zip(before, m.get_weights()))  # the first batch trained


def test_early_stop_and_keyboard_interrupt_stop_the_producer():
    """An endless generator: a callback stopping training after 2 batches ends fit (the producer
    blocked on a full queue is stopped, not left behind); a KeyboardInterrupt from a callback
    reaches the caller, and the thread is gone too (the autouse fixture checks)."""
    def endless():
        while True:
            yield X[:4], Y[:4]

    class StopAfter(callbacks.Callback):
        def __init__(self, error=None):
            super().__init__()
            self.error = error

        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                if self.error:
                    raise self.error
                self.model.stop_training = True

    m = model()
    source = endless()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = m.fit(source, epochs=5, verbose=0, callbacks=[StopAfter()])
        assert len(history.history["loss"]) == 1 and prefetch_threads() == []
        with pytest.raises(KeyboardInterrupt):
            m.fit(Batches(workers=2), epochs=5, steps_per_epoch=None, verbose=0, callbacks=[StopAfter(KeyboardInterrupt())])
    assert prefetch_threads() == []


def test_progress_bar_of_unknown_length_prints_as_keras():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = Progbar(None, stream=stream, interval=0)
    bar.update(1, {"loss": 0.5})
    bar.update(3, {"loss": 0.25}, finalize=True)
    first, last = stream.getvalue().split("\r")[1:]
    assert first.startswith("      1/Unknown") and "loss: 0.5000" in first
    assert last.startswith("3/3 ━━━━━━━━━━━━━━━━━━━━") and last.endswith("loss: 0.2500\n")


def test_fit_prints_the_final_count_of_a_generator(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model().fit(batches(), verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "3/3 ━━━━━━━━━━━━━━━━━━━━" in out


def test_batches_are_moved_from_pinned_memory_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from kcomp.training.prefetch import Prefetcher

    device = torch.device("cuda")
    raw = iter([[torch.arange(6.0).reshape(3, 2)], [torch.ones(2, 2)]])
    with Prefetcher(raw, lambda b: b, device) as prefetcher:
        got = [t for (t,) in prefetcher]
    assert all(t.device.type == "cuda" for t in got)
    torch.testing.assert_close(got[0].cpu(), torch.arange(6.0).reshape(3, 2))
