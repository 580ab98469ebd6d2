"""Side by side with Keras 3: metric objects built with their arguments (thresholds lists, AUC's
curves and summation methods, class_id, from_logits), the arguments kcomp does not compute yet,
and .keras archives whose compile config holds metric objects."""

import numpy as np
import pytest

from keras_oracle import assert_logs_close, dense_model, keras, twins

import kcomp
from kcomp.errors import ArgumentError

RNG = np.random.default_rng(11)
X = RNG.random((29, 4)).astype("float32")
BITS = (RNG.random((29, 1)) > 0.5).astype("float32")


def _logs_of_both(ours, theirs, x, y, **kw):
    return (ours.evaluate(x, y, verbose=0, return_dict=True, **kw),
            theirs.evaluate(x, y, verbose=0, return_dict=True, **kw))


def _spread(lib):
    """A model whose predictions spread over (0, 1) on X, so every threshold sees a different count."""
    inp = lib.Input((4,))
    return lib.Model(inp, lib.layers.Dense(1, activation="sigmoid")(lib.layers.Dense(5, activation="tanh")(inp)))


def _scaled_weights(ours, theirs, scale=4.0):
    weights = [w * scale for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.Precision(thresholds=[0.3, 0.5, 0.7]),
    lambda lib: lib.metrics.Recall(thresholds=[0.2, 0.45, 0.9]),
    lambda lib: lib.metrics.Precision(thresholds=[0.4]),  # one threshold in a list: one number, as Keras
    lambda lib: lib.metrics.TruePositives(thresholds=[0.5]),
    lambda lib: lib.metrics.FalseNegatives(thresholds=[0.25, 0.6]),
    lambda lib: lib.metrics.Recall(0.35),
])
def test_a_list_of_thresholds_gives_one_value_per_threshold(make):
    ours, theirs = twins(_spread, optimizer="sgd", loss="binary_crossentropy", metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs)
    a, b = _logs_of_both(ours, theirs, X, BITS, batch_size=8)
    for key in b:
        assert np.ndim(a[key]) == np.ndim(b[key]), (key, a[key], b[key])
    assert_logs_close(a, b, rtol=2e-5)


@pytest.mark.parametrize("curve", ["ROC", "PR", "PRGAIN"])
@pytest.mark.parametrize("summation_method", ["interpolation", "minoring", "majoring"])
def test_auc_curves_and_summation_methods(curve, summation_method):
    ours, theirs = twins(_spread, optimizer="sgd", loss="binary_crossentropy",
                         metrics=lambda lib: [lib.metrics.AUC(num_thresholds=13, curve=curve, summation_method=summation_method),
                                              lib.metrics.AUC(curve=curve, summation_method=summation_method)])
    _scaled_weights(ours, theirs)
    assert_logs_close(*_logs_of_both(ours, theirs, X, BITS, batch_size=8), rtol=2e-5)


def test_auc_pr_interpolation_on_uneven_counts_and_sample_weights():
    """Davis & Goadrich's interpolation differs from the trapezoid rule most where few predictions
    cross each threshold; weighted metrics weigh the counts."""
    y = (RNG.random((29, 1)) > 0.8).astype("float32")
    weights = np.linspace(0.2, 2.0, 29).astype("float32")
    ours, theirs = twins(_spread, optimizer="sgd", loss="binary_crossentropy",
                         metrics=lambda lib: [lib.metrics.AUC(num_thresholds=7, curve="PR")],
                         weighted_metrics=lambda lib: [lib.metrics.AUC(num_thresholds=50, curve="PR")])
    _scaled_weights(ours, theirs, 6.0)
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=8, sample_weight=weights), rtol=2e-5)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.AUC(thresholds=[0.3, 0.1, 0.6, 0.65]),
    lambda lib: lib.metrics.AUC(thresholds=[0.3, 0.5], curve="PR"),
    lambda lib: lib.metrics.AUC(num_thresholds=9, from_logits=True),
    lambda lib: lib.metrics.AUC(curve="PR", from_logits=True, summation_method="majoring"),
])
def test_auc_given_thresholds_and_logits(make):
    ours, theirs = twins(lambda lib: dense_model(lib, activation=None), optimizer="sgd", loss="mse",
                         metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs, 2.0)
    assert_logs_close(*_logs_of_both(ours, theirs, X, BITS, batch_size=8), rtol=2e-5)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.Precision(class_id=2),
    lambda lib: lib.metrics.Recall(thresholds=[0.2, 0.4], class_id=0),
    lambda lib: lib.metrics.PrecisionAtRecall(0.5, class_id=1, num_thresholds=9),
    lambda lib: lib.metrics.Precision(top_k=2),
    lambda lib: lib.metrics.Recall(top_k=1),
    lambda lib: lib.metrics.Precision(top_k=1, class_id=2),
    lambda lib: lib.metrics.Recall(thresholds=[0.3, 0.6], top_k=2),
])
def test_class_id_and_top_k_count_as_keras(make):
    y = (RNG.random((29, 3)) > 0.5).astype("float32")
    ours, theirs = twins(lambda lib: dense_model(lib, units=3), optimizer="sgd", loss="binary_crossentropy",
                         metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs)
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=8), rtol=2e-5)


@pytest.mark.parametrize("make, argument", [
    (lambda m: m.Precision(top_k=0), "top_k"),
    (lambda m: m.Recall(class_id=-1), "class_id"),
    (lambda m: m.AUC(num_labels=3), "num_labels"),
    (lambda m: m.AUC(label_weights=[0.5, -1.0]), "label_weights"),
    (lambda m: m.AUC(summation_method="trapezoid"), "summation_method"),
    (lambda m: m.Precision(thresholds=[0.5, 1.5]), "thresholds"),
    (lambda m: m.PrecisionAtRecall(0.5, top_k=3), "top_k"),
])
def test_bad_arguments_name_themselves(make, argument):
    with pytest.raises(ArgumentError, match=argument):
        make(kcomp.metrics)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.AUC(multi_label=True, num_thresholds=21),
    lambda lib: lib.metrics.AUC(multi_label=True, num_labels=3, curve="PR"),
    lambda lib: lib.metrics.AUC(multi_label=True, label_weights=[0.2, 1.0, 0.5], summation_method="minoring"),
    lambda lib: lib.metrics.AUC(label_weights=[0.2, 1.0, 0.5], curve="PR"),
    lambda lib: lib.metrics.AUC(label_weights=[1.0, 0.0, 2.0], num_thresholds=9),
])
def test_auc_per_label_and_label_weights(make):
    y = (RNG.random((29, 3)) > 0.5).astype("float32")
    weights = np.linspace(0.5, 1.5, 29).astype("float32")
    ours, theirs = twins(lambda lib: dense_model(lib, units=3), optimizer="sgd", loss="binary_crossentropy",
                         metrics=lambda lib: [make(lib)], weighted_metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs)
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=8, sample_weight=weights), rtol=2e-5)


def test_auc_per_label_needs_the_labels_it_was_given():
    ours, _ = twins(lambda lib: dense_model(lib, units=3))
    ours.compile(optimizer="sgd", loss="mse", metrics=[kcomp.metrics.AUC(multi_label=True, num_labels=2)], backend="reference")
    with pytest.raises(kcomp.errors.KcompError, match="num_labels"):
        ours.evaluate(X, np.ones((29, 3), "float32"), verbose=0)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.AUC(),
    lambda lib: lib.metrics.AUC(num_thresholds=25, curve="PR", summation_method="minoring"),
    lambda lib: lib.metrics.AUC(thresholds=[0.2, 0.7], from_logits=False),
    lambda lib: lib.metrics.PrecisionAtRecall(0.5),
    lambda lib: lib.metrics.SensitivityAtSpecificity(0.5),
    lambda lib: lib.metrics.RecallAtPrecision(precision=0.6, num_thresholds=7),
    lambda lib: lib.metrics.PearsonCorrelation(),
    lambda lib: lib.metrics.CategoricalCrossentropy(),
    lambda lib: lib.metrics.BinaryCrossentropy(),
    lambda lib: lib.metrics.Precision(thresholds=[0.3, 0.6]),
    lambda lib: lib.metrics.TruePositives(),
    lambda lib: lib.metrics.Recall(top_k=1, class_id=0),
    lambda lib: lib.metrics.AUC(multi_label=True, num_labels=1, label_weights=[2.0], curve="PR"),
])
def test_keras_archives_with_metric_objects_load_and_evaluate_as_keras(tmp_path, make):
    theirs = _spread(keras)
    theirs.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[make(keras)])
    theirs.fit(X, BITS, batch_size=29, epochs=1, verbose=0)
    theirs.save(tmp_path / "m.keras")
    ours = kcomp.models.load_model(tmp_path / "m.keras")
    assert_logs_close(*_logs_of_both(ours, theirs, X, BITS, batch_size=8), rtol=2e-5)


def test_factory_made_metric_classes_show_keras_signatures():
    import inspect

    params = inspect.signature(kcomp.metrics.PrecisionAtRecall).parameters
    assert list(params) == ["recall", "num_thresholds", "class_id", "name", "dtype"]
    assert kcomp.metrics.SensitivityAtSpecificity(specificity=0.3).value == 0.3
    assert kcomp.metrics.RecallAtPrecision(0.7, 9).num_thresholds == 9
    assert {"axis", "name", "dtype"} <= set(inspect.signature(kcomp.metrics.PearsonCorrelation).parameters)
    with pytest.raises(ArgumentError, match="recall"):
        kcomp.metrics.PrecisionAtRecall()


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.AUC(num_thresholds=9, curve="PR", summation_method="majoring", from_logits=True),
    lambda lib: lib.metrics.AUC(thresholds=[0.25, 0.5]),
    lambda lib: lib.metrics.PrecisionAtRecall(0.3, num_thresholds=11),
    lambda lib: lib.metrics.SpecificityAtSensitivity(sensitivity=0.6),
    lambda lib: lib.metrics.Precision(thresholds=[0.3, 0.6]),
    lambda lib: lib.metrics.Recall(0.4),
    lambda lib: lib.metrics.Precision(top_k=1, class_id=0),
    lambda lib: lib.metrics.AUC(multi_label=True, label_weights=[0.5], summation_method="minoring"),
    lambda lib: lib.metrics.FalsePositives(thresholds=[0.2, 0.7]),
    lambda lib: lib.metrics.BinaryCrossentropy(label_smoothing=0.1),
])
def test_kcomp_archives_keep_their_metrics_arguments_for_keras_and_kcomp(tmp_path, make):
    """A metric's own arguments travel in the compile config: AUC(curve='PR') comes back a PR AUC,
    PrecisionAtRecall keeps its recall (it had been written with its name only)."""
    ours, theirs = twins(_spread, optimizer="sgd", loss="binary_crossentropy", metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs)
    ours.save(tmp_path / "m.keras")
    for loaded in (keras.saving.load_model(tmp_path / "m.keras"), kcomp.models.load_model(tmp_path / "m.keras")):
        assert_logs_close(*_logs_of_both(ours, loaded, X, BITS, batch_size=8), rtol=2e-5)
    assert_logs_close(*_logs_of_both(ours, theirs, X, BITS, batch_size=8), rtol=2e-5)


def test_the_compiled_step_counts_as_the_reference_with_class_id_top_k_and_logits():
    y = (RNG.random((29, 3)) > 0.5).astype("float32")
    weights, results = dense_model(kcomp, units=3).get_weights(), {}
    for backend in ("reference", "triton-interpret"):
        ours = dense_model(kcomp, units=3)
        ours.set_weights([w * 3 for w in weights])
        ours.compile(optimizer="sgd", loss="binary_crossentropy", backend=backend, metrics=[
            kcomp.metrics.Precision(thresholds=[0.3, 0.5], class_id=1, name="p"),
            kcomp.metrics.Recall(top_k=2, name="r"),
            kcomp.metrics.AUC(num_thresholds=17, curve="PR", from_logits=True, name="auc"),
            kcomp.metrics.RecallAtPrecision(0.5, class_id=2, name="rp"),
        ])
        results[backend] = (ours.train_on_batch(X, y, return_dict=True),
                            ours.evaluate(X, y, batch_size=8, verbose=0, return_dict=True))
    for got, want in zip(results["triton-interpret"], results["reference"]):
        assert_logs_close(got, want, rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.AUC(),
    lambda lib: lib.metrics.AUC(curve="PR", num_thresholds=11),
    lambda lib: lib.metrics.AUC(thresholds=[0.25, 0.5, 0.75]),  # evenly spread once 0 and 1 are added
    lambda lib: lib.metrics.PrecisionAtRecall(0.2, num_thresholds=5),
    lambda lib: lib.metrics.Recall(thresholds=[0.0, 0.5, 1.0]),
    lambda lib: lib.metrics.TruePositives(thresholds=[0.0, 0.5, 1.0]),
    lambda lib: lib.metrics.Precision(thresholds=[0.0, 0.4, 1.0]),  # not evenly spread: not clipped
])
def test_predictions_outside_zero_one_count_as_keras_clips_them(make):
    """Keras counts evenly spread thresholds by buckets of the predictions clipped to [0, 1]: a
    prediction of 1.7 is not above the threshold 1.0, and -3 is above AUC's first threshold (-1e-7)."""
    ours, theirs = twins(lambda lib: dense_model(lib, activation=None), optimizer="sgd", loss="mse",
                         metrics=lambda lib: [make(lib)])
    _scaled_weights(ours, theirs, 3.0)
    predictions = ours.predict(X, verbose=0)
    assert predictions.min() < 0 and predictions.max() > 1
    assert_logs_close(*_logs_of_both(ours, theirs, X, BITS, batch_size=8), rtol=2e-5)


def test_a_tensor_in_a_config_gives_its_numbers_and_nothing_else():
    from kcomp.saving.allow_list import SerializationError, plain_value

    tensor = {"class_name": "__tensor__", "config": {"value": [0.5, 1.0], "dtype": "float32"}}
    assert plain_value(tensor, "here") == [0.5, 1.0]
    for bad in ([{"class_name": "system", "module": "os"}], ["rm -rf"], [[True]]):
        with pytest.raises(SerializationError):
            plain_value({"class_name": "__tensor__", "config": {"value": bad, "dtype": "float32"}}, "here")
