"""A rejected call changes nothing (issue 11): bad targets, weights and settings are refused with a
KcompError that names the value, before any step runs, on the reference and the compiled backend."""

import math

import numpy as np
import pytest

import kcomp
from kcomp.errors import KcompError

BACKENDS = ["reference", "triton-interpret"]
RNG = np.random.default_rng(3)
X = RNG.random((11, 4)).astype("float32")
LABELS = np.arange(11) % 3


def classifier(backend, loss="sparse_categorical_crossentropy", **compile_kwargs):
    inp = kcomp.Input((4,))
    model = kcomp.Model(inp, kcomp.layers.Dense(3, activation="softmax")(kcomp.layers.Dense(5, activation="relu")(inp)))
    model.compile(optimizer=compile_kwargs.pop("optimizer", "adam"), loss=loss, backend=backend, **compile_kwargs)
    return model


def assert_refused_and_unchanged(model, call, match):
    weights = model.get_weights()
    iterations = model.optimizer.iterations
    with pytest.raises(KcompError, match=match):
        call()
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert model.optimizer.iterations == iterations


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad, match", [(7, r"7 \(element 10\).*\[0, 3\)"), (-1, r"-1 \(element 10\)"), (2.5, r"2\.5 \(element 10\)")])
def test_a_bad_class_id_in_the_last_batch_is_refused_before_the_first_step(backend, bad, match):
    labels = LABELS.astype("float32" if isinstance(bad, float) else "int64")
    labels[-1] = bad
    model = classifier(backend)
    assert_refused_and_unchanged(model, lambda: model.fit(X, labels, batch_size=4, verbose=0), match)
    assert_refused_and_unchanged(model, lambda: model.evaluate(X, labels, verbose=0), match)
    assert_refused_and_unchanged(model, lambda: model.train_on_batch(X, labels), match)


def test_bad_class_ids_in_validation_data_are_refused_before_training():
    model = classifier("reference")
    bad = LABELS.copy()
    bad[0] = 3
    assert_refused_and_unchanged(model, lambda: model.fit(X, LABELS, validation_data=(X, bad), verbose=0), r"3 \(element 0\)")


def test_class_ids_of_a_crossentropy_picked_from_shapes_are_checked_too():
    model = classifier("reference", loss="crossentropy")
    bad = LABELS.copy()
    bad[4] = 9
    assert_refused_and_unchanged(model, lambda: model.fit(X, bad, verbose=0), r"9 \(element 4\)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights, match", [
    (lambda w: np.where(np.arange(11) == 6, np.nan, w), r"sample_weight\[6\] is nan"),
    (lambda w: np.where(np.arange(11) == 2, np.inf, w), r"sample_weight\[2\] is inf"),
])
def test_nan_or_inf_sample_weights_are_refused(backend, weights, match):
    model = classifier(backend)
    bad = weights(np.ones(11, "float32"))
    assert_refused_and_unchanged(model, lambda: model.fit(X, LABELS, sample_weight=bad, verbose=0), match)
    assert_refused_and_unchanged(model, lambda: model.evaluate(X, LABELS, sample_weight=bad, verbose=0), match)


@pytest.mark.parametrize("class_weight", [{0: 1.0, 1: math.nan}, {0: "heavy"}])
def test_bad_class_weights_are_refused(class_weight):
    model = classifier("reference")
    assert_refused_and_unchanged(model, lambda: model.fit(X, LABELS, class_weight=class_weight, verbose=0), "class_weight")


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_samples_are_refused(backend):
    model = classifier(backend)
    assert_refused_and_unchanged(model, lambda: model.fit(X[:0], LABELS[:0], verbose=0), "0 samples")
    assert_refused_and_unchanged(model, lambda: model.evaluate(X[:0], LABELS[:0], verbose=0), "0 samples")


@pytest.mark.parametrize("targets, match", [
    (np.array(["a"] * 11), "dtype <U1"), (np.ones(11, np.complex64), "complex"), (None, "None"),
    ([[1, 2], [1]] + [[0, 0]] * 9, "ragged"), (np.array([object()] * 11), "dtype object"),
])
def test_targets_that_are_not_numbers_are_refused(targets, match):
    model = classifier("reference", loss="mse")
    assert_refused_and_unchanged(model, lambda: model.fit(X, targets, verbose=0), match)


@pytest.mark.parametrize("make, match", [
    (lambda: kcomp.optimizers.SGD(learning_rate=math.nan), "learning_rate=nan"),
    (lambda: kcomp.optimizers.Adam(learning_rate=math.inf), "learning_rate=inf"),
    (lambda: kcomp.optimizers.Adam(beta_1=1.5), r"beta_1=1\.5.*\[0\.0, 1\.0\)"),
    (lambda: kcomp.optimizers.Adam(beta_2=-0.1), "beta_2=-0.1"),
    (lambda: kcomp.optimizers.Adam(epsilon=-1e-7), "epsilon=-1e-07"),
    (lambda: kcomp.optimizers.AdamW(weight_decay=math.nan), "weight_decay=nan"),
    (lambda: kcomp.optimizers.RMSprop(rho=1.0), r"rho=1\.0"),
    (lambda: kcomp.optimizers.SGD(momentum=2), "momentum=2"),
    (lambda: kcomp.optimizers.Adagrad(initial_accumulator_value=-1), "initial_accumulator_value=-1"),
    (lambda: kcomp.optimizers.Adam(beta_1="0.9"), "beta_1='0.9'"),
])
def test_optimizer_settings_out_of_range_are_refused(make, match):
    with pytest.raises(KcompError, match=match):
        make()
def test_numpy_integers_are_taken_where_python_ints_are():
    model = classifier("reference")
    history = model.fit(X, LABELS, batch_size=np.int64(4), epochs=np.int32(2), verbose=0)
    assert len(history.history["loss"]) == 2
    model.evaluate(X, LABELS, batch_size=np.int64(5), verbose=0)
    assert model.predict(X, batch_size=np.int64(3), verbose=0).shape == (11, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inputs, match", [
    (np.array([["a"] * 4] * 11), "dtype <U1"), (np.ones((11, 4), np.complex64), "complex"), (None, "None"),
    ([[1.0, 2.0, 3.0, 4.0], [1.0]] + [[0.0] * 4] * 9, "ragged"), (np.array([[object()] * 4] * 11), "dtype object"),
])
def test_inputs_that_are_not_numbers_are_refused_everywhere(backend, inputs, match):
    model = classifier(backend)
    assert_refused_and_unchanged(model, lambda: model.fit(inputs, LABELS, verbose=0), match)
    assert_refused_and_unchanged(model, lambda: model.evaluate(inputs, LABELS, verbose=0), match)
    with pytest.raises(KcompError, match=match):
        model.predict(inputs, verbose=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_on_zero_samples_gives_an_empty_batch_of_the_output_shape(backend):
    model = classifier(backend)
    out = model.predict(X[:0], verbose=0)
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_reversed_arrays_are_taken_as_targets_and_inputs():
    model = classifier("reference")
    model.fit(X[::-1], LABELS[::-1], verbose=0)
    model.evaluate(X[::-1], LABELS[::-1].astype("float32")[:, None].astype("int64"), verbose=0)


def text_classifier(backend):
    model = kcomp.Sequential([kcomp.Input((5,), dtype="int32"), kcomp.layers.Embedding(10, 4),
                              kcomp.layers.GlobalAveragePooling1D(), kcomp.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=backend)
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_of_range_embedding_ids_are_refused_before_the_first_step(backend):
    """An id >= input_dim in the last batch fails the fit before any batch trains, naming the id,
    the layer and input_dim; as do negative ids, float ids that truncate out of range, and bad ids
    in the validation data, evaluate, train_on_batch and predict."""
    model = text_classifier(backend)
    ids = np.arange(40).reshape(8, 5) % 10
    labels = np.arange(8) % 2
    bad = ids.copy()
    bad[-1, -1] = 10
    assert_refused_and_unchanged(model, lambda: model.fit(bad, labels, batch_size=2, verbose=0),
                                 r"holds 10 \(element 39\).*input_dim=10.*\[0, 10\)")
    negative = ids.copy()
    negative[0, 1] = -1
    assert_refused_and_unchanged(model, lambda: model.train_on_batch(negative, labels), "holds -1")
    floats = ids.astype("float32")
    floats[3, 0] = 10.5
    # Float ids: the int32 input truncates 10.5 to 10 (Keras's cast), which is out of range.
    assert_refused_and_unchanged(model, lambda: model.evaluate(floats, labels, verbose=0), r"holds 10 \(element 15\)")
    assert_refused_and_unchanged(
        model, lambda: model.fit(ids, labels, validation_data=(bad, labels), verbose=0), "holds 10")
    with pytest.raises(KcompError, match="holds 10"):
        model.predict(bad, verbose=0)
    model.fit(ids.astype("float32") + 0.5, labels, verbose=0)  # 9.5 truncates to 9: in range
