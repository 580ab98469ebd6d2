"""Side by side with Keras 3: targets of every dtype and rank, every loss and metric by its Keras
names, multi-output losses and logs, learning rates in the logs."""

import numpy as np
import pytest

from keras_oracle import assert_logs_close, dense_model, keras, twins

import kcomp
from kcomp.errors import KcompError

RNG = np.random.default_rng(7)
X = RNG.random((13, 4)).astype("float32")
BITS = RNG.random(13) > 0.5


def _evaluate_both(ours, theirs, x, y, **kw):
    return ours.evaluate(x, y, verbose=0, **kw), theirs.evaluate(x, y, verbose=0, **kw)


def _logs_of_both(ours, theirs, x, y, **kw):
    return _evaluate_both(ours, theirs, x, y, return_dict=True, **kw)


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "int8", "bool", "float64", "float16", "float32"])
@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse"])
def test_targets_of_every_dtype_and_rank_give_keras_losses_and_steps(dtype, rank, loss):
    y = BITS.astype(dtype)
    y = y if rank == 1 else y[:, None]
    ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(0.5), loss=loss)
    a, b = _evaluate_both(ours, theirs, X, y)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for _ in range(2):  # training steps on those targets, then the loss they lead to
        np.testing.assert_allclose(ours.train_on_batch(X, y), theirs.train_on_batch(X, y), rtol=1e-5)
    a, b = _evaluate_both(ours, theirs, X, y)
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_rank_one_targets_never_broadcast_to_n_by_n():
    """(N,) targets against (N, 1) outputs: one loss per sample, not an (N, N) table."""
    ours, _ = twins(dense_model)
    ours.compile(optimizer="sgd", loss="mse", backend="reference")
    y = BITS.astype("float32")
    expected = np.mean((ours.predict(X, verbose=0)[:, 0] - y) ** 2)
    np.testing.assert_allclose(ours.evaluate(X, y, verbose=0), expected, rtol=1e-6)


def test_rank_one_targets_on_the_compiled_step_equal_the_reference():
    ours, _ = twins(dense_model)
    y = BITS.astype("uint8")
    ours.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"], backend="reference")
    reference = ours.evaluate(X, y, verbose=0)
    ours.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"], backend="triton-interpret")
    np.testing.assert_allclose(ours.evaluate(X, y, verbose=0), reference, rtol=1e-5)


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse", "hinge", "categorical_crossentropy"])
def test_targets_that_do_not_fit_name_both_shapes(loss):
    ours, _ = twins(lambda lib: dense_model(lib, units=2, activation="softmax"))
    ours.compile(optimizer="sgd", loss=loss, backend="reference")
    with pytest.raises(KcompError, match=r"\(None, 3\).*\(None, 2\)"):
        ours.evaluate(X, np.ones((13, 3), "float32"), verbose=0)
    weights = ours.get_weights()
    with pytest.raises(KcompError):
        ours.fit(X, np.ones((13, 3), "float32"), verbose=0)
    for before, after in zip(weights, ours.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_targets_of_other_kinds_are_refused():
    ours, _ = twins(dense_model)
    ours.compile(optimizer="sgd", loss="mse", backend="reference")
    with pytest.raises(KcompError, match="dtype"):
        ours.evaluate(X, np.array(["a"] * 13), verbose=0)
    with pytest.raises(KcompError, match="complex"):
        ours.evaluate(X, np.ones(13, np.complex64), verbose=0)


def test_saturated_probabilities_give_keras_binary_crossentropy():
    """A saturated sigmoid (p rounds to 0 or 1): Keras clips to [1e-7, 1 - 1e-7] and takes the
    logarithms of the clipped values (torch backend), with no epsilon added inside them."""
    ours, theirs = twins(dense_model, optimizer="sgd", loss="binary_crossentropy")
    y = (np.arange(13) % 2).astype("float32")
    for logit in (30.0, -30.0):  # sigmoid(30) rounds to 1.0, sigmoid(-30) is below the clip
        weights = ours.get_weights()
        weights[2], weights[3] = weights[2] * 0, weights[3] * 0 + logit
        for model in (ours, theirs):
            model.set_weights(weights)
        p = ours.predict(X, verbose=0)
        assert np.all(p == 1.0) if logit > 0 else np.all(p < 1e-7)
        a, b = _evaluate_both(ours, theirs, X, y)
        np.testing.assert_allclose(a, b, rtol=1e-6)
        assert a > 7.0  # half the samples at -log(1.19e-7) = 15.94


REGRESSION = ["mse", "MSE", "mae", "mape", "msle", "MSLE", "mean_squared_error", "MeanSquaredError",
              "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "cosine_similarity",
              "CosineSimilarity", "huber", "Huber", "log_cosh", "LogCosh", "poisson", "Poisson", "kl_divergence",
              "kld", "KLD", "hinge", "squared_hinge", "SquaredHinge", "categorical_hinge", "CategoricalHinge"]
CLASSIFICATION = ["categorical_crossentropy", "CategoricalCrossentropy", "crossentropy", "ce", "categorical_focal_crossentropy",
                  "CategoricalFocalCrossentropy", "dice", "Dice", "tversky", "Tversky"]
BINARY = ["binary_crossentropy", "bce", "BCE", "BinaryCrossentropy", "binary_focal_crossentropy", "BinaryFocalCrossentropy"]
SPARSE = ["sparse_categorical_crossentropy", "SparseCategoricalCrossentropy", "crossentropy"]


def _case(loss):
    """(model builder, targets) that suit a loss."""
    if loss in BINARY:
        return dense_model, BITS.astype("int64")
    if loss in CLASSIFICATION:
        return lambda lib: dense_model(lib, units=3, activation="softmax"), np.eye(3, dtype="float32")[np.arange(13) % 3]
    if loss in SPARSE:
        return lambda lib: dense_model(lib, units=3, activation="softmax"), (np.arange(13) % 3)
    # Positive outputs (softplus) keep msle / poisson / kld meaningful; targets with some zeros.
    return (lambda lib: dense_model(lib, units=3, activation="softplus"),
            np.round(RNG.random((13, 3)) * 2, 1).astype("float32"))


@pytest.mark.parametrize("loss", sorted(set(REGRESSION + CLASSIFICATION + BINARY + SPARSE)) + ["sparse_ce"])
def test_every_keras_loss_name_gives_keras_numbers(loss):
    name = "crossentropy" if loss == "sparse_ce" else loss
    build, y = _case("crossentropy" if loss == "sparse_ce" else loss)
    if loss == "sparse_ce":
        build, y = _case("sparse_categorical_crossentropy")
    ours, theirs = twins(build, optimizer=lambda lib: lib.optimizers.SGD(0.1), loss=name)
    a, b = _evaluate_both(ours, theirs, X, y)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours.train_on_batch(X, y), theirs.train_on_batch(X, y), rtol=2e-5, atol=1e-6)
    a, b = _evaluate_both(ours, theirs, X, y)  # after a step: the gradients agree too
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("cls", ["Huber", "BinaryCrossentropy", "CategoricalCrossentropy", "MeanSquaredError"])
def test_loss_objects_with_arguments_and_reductions(cls):
    kwargs = {"Huber": dict(delta=0.3), "BinaryCrossentropy": dict(label_smoothing=0.2, reduction="sum"),
              "CategoricalCrossentropy": dict(label_smoothing=0.1), "MeanSquaredError": dict(reduction="mean_with_sample_weight")}[cls]
    build, y = _case({"Huber": "huber", "BinaryCrossentropy": "bce", "CategoricalCrossentropy": "ce", "MeanSquaredError": "mse"}[cls])
    ours, theirs = twins(build, optimizer="sgd", loss=lambda lib: getattr(lib.losses, cls)(**kwargs))
    weights = np.linspace(0.5, 2.0, 13).astype("float32")
    a, b = _evaluate_both(ours, theirs, X, y, sample_weight=weights)
    np.testing.assert_allclose(a, b, rtol=2e-5)


METRICS = ["mse", "mean_squared_error", "MeanSquaredError", "mae", "MAE", "mape", "msle", "RootMeanSquaredError",
           "root_mean_squared_error", "cosine_similarity", "log_cosh_error", "poisson", "hinge", "squared_hinge",
           "binary_crossentropy", "bce", "Accuracy", "acc", "accuracy", "binary_accuracy", "AUC", "auc", "Precision",
           "recall", "TruePositives", "false_negatives", "kl_divergence"]


def test_every_keras_metric_name_gives_keras_numbers():
    y = BITS.astype("int64")[:, None]
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse", metrics=METRICS)
    a, b = _logs_of_both(ours, theirs, X, y)
    assert_logs_close(a, b, rtol=2e-5)


@pytest.mark.parametrize("metric", ["categorical_accuracy", "categorical_crossentropy",
                                    "CategoricalHinge", "accuracy"])
def test_categorical_metrics(metric):
    build, y = _case("categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="categorical_crossentropy", metrics=[metric])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y))


@pytest.mark.parametrize("metric", ["sparse_categorical_accuracy", "sparse_categorical_crossentropy", "accuracy",
                                    lambda lib: lib.metrics.SparseTopKCategoricalAccuracy(k=2)])
@pytest.mark.parametrize("rank", [1, 2])
def test_sparse_metrics(metric, rank):
    build, y = _case("sparse_categorical_crossentropy")
    y = y if rank == 1 else y[:, None]
    ours, theirs = twins(build, optimizer="sgd", loss="sparse_categorical_crossentropy",
                         metrics=lambda lib: [metric(lib) if callable(metric) else metric])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y))


@pytest.mark.parametrize("metric", ["top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy"])
def test_top_k_beyond_the_classes_raises_as_in_keras(metric):
    """Keras's top-k metrics (k=5 by default) fail on 3 classes; kcomp names k and the classes."""
    build, y = _case("sparse_categorical_crossentropy" if metric.startswith("sparse") else "categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="mse" if not metric.startswith("sparse") else "sparse_categorical_crossentropy",
                         metrics=[metric])
    with pytest.raises(RuntimeError):
        theirs.evaluate(X, y, verbose=0)
    with pytest.raises(KcompError, match="k=5.*3 classes"):
        ours.evaluate(X, y, verbose=0)


def test_metric_objects_take_keras_positional_arguments():
    build, y = _case("categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="categorical_crossentropy",
                         metrics=lambda lib: [lib.metrics.TopKCategoricalAccuracy(2), lib.metrics.AUC(num_thresholds=11)])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y))


@pytest.mark.parametrize("metric, message", [("binary_crossentropy", r"\(None,\).*\(None, 1\)"),
                                             ("f1_score", r"\(None,\) and \(None, 1\)")])
def test_metrics_that_refuse_rank_one_targets_as_keras_does(metric, message):
    """binary_crossentropy and F-scores as metrics do not reconcile (N,) targets with (N, 1) outputs in Keras."""
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse", metrics=[metric])
    with pytest.raises(ValueError):
        theirs.evaluate(X, BITS.astype("float32"), verbose=0)
    with pytest.raises(KcompError, match=message):
        ours.evaluate(X, BITS.astype("float32"), verbose=0)


def test_unknown_and_not_yet_computed_metrics_are_named():
    ours, _ = twins(dense_model)
    with pytest.raises(KcompError, match="ctc.*does not compute yet"):
        ours.compile(optimizer="sgd", loss="ctc", backend="reference")
    with pytest.raises(KcompError, match="Mean.*does not compute yet"):
        ours.compile(optimizer="sgd", loss="mse", metrics=["Mean"], backend="reference")
    with pytest.raises(KcompError, match="logcosh"):
        ours.compile(optimizer="sgd", loss="mse", metrics=["logcosh"], backend="reference")


def two_outputs(lib):
    inp = lib.Input((4,))
    hidden = lib.layers.Dense(6, activation="relu")(inp)
    cls = lib.layers.Dense(1, activation="sigmoid", name="cls")(hidden)
    reg = lib.layers.Dense(2, name="reg")(hidden)
    return lib.Model(inp, [cls, reg])


@pytest.mark.parametrize("as_dict", [True, False])
def test_multi_output_losses_metrics_and_weights_by_output_name(as_dict):
    y_reg = RNG.random((13, 2)).astype("float32")
    y_cls = BITS.astype("int64")
    if as_dict:
        settings = dict(loss={"cls": "binary_crossentropy", "reg": "mse"}, loss_weights={"cls": 1.0, "reg": 0.5},
                        metrics={"cls": ["accuracy", "AUC"], "reg": ["mae", "RootMeanSquaredError"]})
        y = {"cls": y_cls, "reg": y_reg}
    else:
        settings = dict(loss=["binary_crossentropy", "mse"], loss_weights=[1.0, 0.5],
                        metrics=[["accuracy", "AUC"], ["mae", "RootMeanSquaredError"]])
        y = [y_cls, y_reg]
    ours, theirs = twins(two_outputs, optimizer=lambda lib: lib.optimizers.SGD(0.1), **settings)
    a, b = _logs_of_both(ours, theirs, X, y)
    assert set(b) == {"loss", "cls_loss", "reg_loss", "cls_accuracy", "cls_AUC", "reg_mae", "reg_RootMeanSquaredError"}
    assert_logs_close(a, b, rtol=2e-5)
    h_ours = ours.fit(X, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    h_theirs = theirs.fit(X, y, batch_size=5, epochs=2, shuffle=False, verbose=0)
    assert_logs_close(h_ours.history, h_theirs.history, rtol=2e-5)


def test_a_loss_dict_must_name_every_output_as_in_keras():
    ours, theirs = twins(two_outputs)
    with pytest.raises(KcompError, match="cls"):
        ours.compile(optimizer="sgd", loss={"reg": "mse"}, backend="reference")
    with pytest.raises(KcompError, match="nope"):
        ours.compile(optimizer="sgd", loss={"cls": "mse", "reg": "mse", "nope": "mse"}, backend="reference")


def test_history_params_model_and_learning_rates_as_keras_logs_them():
    y = BITS.astype("float32")
    for make_callback in (lambda lib: lib.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0),
                          lambda lib: lib.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)):
        ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(0.05), loss="mse")
        h_ours = ours.fit(X, y, epochs=3, batch_size=13, verbose=0, callbacks=[make_callback(kcomp)])
        h_theirs = theirs.fit(X, y, epochs=3, batch_size=13, verbose=0, callbacks=[make_callback(keras)])
        assert_logs_close(h_ours.history, h_theirs.history, rtol=1e-5)
        assert h_ours.params == h_theirs.params == {"verbose": 0, "epochs": 3, "steps": 1}
        assert h_ours.model is ours
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse")
    assert "learning_rate" not in ours.fit(X, y, verbose=0).history  # only those callbacks log it, as in Keras


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.F1Score(), lambda lib: lib.metrics.F1Score(average="macro"),
    lambda lib: lib.metrics.F1Score(average="weighted", threshold=0.4), lambda lib: lib.metrics.FBetaScore(average="micro", beta=2.0),
    "f1_score", "F1Score", "f_beta_score",
])
def test_f_scores(make):
    build, y = _case("categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="categorical_crossentropy", metrics=lambda lib: [make(lib) if callable(make) else make])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y), rtol=1e-5)


@pytest.mark.parametrize("make", [
    "r2_score", "R2Score", lambda lib: lib.metrics.R2Score(class_aggregation=None),
    lambda lib: lib.metrics.R2Score(class_aggregation="variance_weighted_average", num_regressors=2),
])
def test_r2_score(make):
    build, y = _case("mse")
    ours, theirs = twins(build, optimizer="sgd", loss="mse", metrics=lambda lib: [make(lib) if callable(make) else make])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=5), rtol=1e-5)


@pytest.mark.parametrize("loss", ["log_cosh", "poisson", "mape", "categorical_hinge", "cosine_similarity",
                                  "categorical_focal_crossentropy", "binary_focal_crossentropy", "dice"])
def test_the_compiled_step_equals_the_reference_for_new_losses_and_metrics(loss):
    """The generated kernels (Triton's interpreter) compute the new losses and metrics as the reference does."""
    build, y = _case(loss)
    y = y[:, None] if y.ndim == 1 else y  # F-scores take (batch, outputs) targets
    metrics = ["RootMeanSquaredError", "r2_score", "F1Score", "msle", "squared_hinge"]
    results, weights = {}, build(kcomp).get_weights()
    for backend in ("reference", "triton-interpret"):
        ours = build(kcomp)
        ours.set_weights(weights)
        ours.compile(optimizer="sgd", loss=loss, metrics=metrics, weighted_metrics=["mae", "r2_score"], backend=backend)
        per_sample = np.linspace(0.5, 1.5, 13).astype("float32")
        step = ours.train_on_batch(X, y, sample_weight=per_sample, return_dict=True)
        results[backend] = (step, ours.evaluate(X, y, sample_weight=per_sample, verbose=0, return_dict=True))
    for got, want in zip(results["triton-interpret"], results["reference"]):
        assert_logs_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.PrecisionAtRecall(0.5), lambda lib: lib.metrics.RecallAtPrecision(precision=0.6, num_thresholds=7),
    lambda lib: lib.metrics.SensitivityAtSpecificity(0.4), lambda lib: lib.metrics.SpecificityAtSensitivity(0.8, num_thresholds=1),
])
def test_operating_point_metrics(make):
    y = BITS.astype("int64")[:, None]
    ours, theirs = twins(dense_model, optimizer="sgd", loss="binary_crossentropy", metrics=lambda lib: [make(lib)])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=4), rtol=1e-5)


@pytest.mark.parametrize("metric", ["pearson_correlation", "ConcordanceCorrelation"])
def test_correlation_metrics(metric):
    build, y = _case("mse")
    ours, theirs = twins(build, optimizer="sgd", loss="mse", metrics=[metric])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y), rtol=1e-5)


@pytest.mark.parametrize("make", [
    lambda lib: lib.metrics.OneHotMeanIoU(3), lambda lib: lib.metrics.OneHotIoU(3, [0, 2]),
    lambda lib: lib.metrics.MeanIoU(3, sparse_y_true=False, sparse_y_pred=False, ignore_class=1),
    lambda lib: lib.metrics.IoU(3, [1], sparse_y_true=False, sparse_y_pred=False),
])
def test_iou_metrics_on_classes(make):
    build, y = _case("categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="categorical_crossentropy", metrics=lambda lib: [make(lib)])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=4), rtol=1e-5)


@pytest.mark.parametrize("make", [lambda lib: lib.metrics.BinaryIoU(), lambda lib: lib.metrics.BinaryIoU([1], threshold=0.45)])
def test_binary_iou(make):
    y = BITS.astype("int64")[:, None]
    ours, theirs = twins(dense_model, optimizer="sgd", loss="binary_crossentropy", metrics=lambda lib: [make(lib)])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y, batch_size=4), rtol=1e-5)


def test_weighted_metrics_weigh_by_sample_and_class_weights_as_keras():
    y = BITS.astype("int64")[:, None]  # F-scores take (batch, outputs) targets only, in Keras as here
    settings = dict(optimizer="sgd", loss="mse", metrics=["mae", "accuracy"],
                    weighted_metrics=["mae", "accuracy", "AUC", "RootMeanSquaredError", "f1_score", "r2_score",
                                      lambda lib: lib.metrics.BinaryIoU()])
    ours, theirs = twins(dense_model, **{**settings, "weighted_metrics": lambda lib: [
        m(lib) if callable(m) else m for m in settings["weighted_metrics"]]})
    weights = np.linspace(0.1, 2.0, 13).astype("float32")
    for kwargs in ({"sample_weight": weights}, {}):
        a, b = _logs_of_both(ours, theirs, X, y, batch_size=5, **kwargs)
        assert {"weighted_mae", "weighted_accuracy", "AUC", "f1_score"} <= set(b)
        assert_logs_close(a, b, rtol=2e-5)
    h_ours = ours.fit(X, y, batch_size=5, epochs=2, shuffle=False, verbose=0, class_weight={0: 0.3, 1: 2.0})
    h_theirs = theirs.fit(X, y, batch_size=5, epochs=2, shuffle=False, verbose=0, class_weight={0: 0.3, 1: 2.0})
    assert_logs_close(h_ours.history, h_theirs.history, rtol=2e-5)


def test_compile_refuses_arguments_keras_does_not_take():
    ours, _ = twins(dense_model)
    with pytest.raises(KcompError, match="weighted_metric"):
        ours.compile(optimizer="sgd", loss="mse", weighted_metric=["mae"], backend="reference")
    ours.compile(optimizer="sgd", loss="mse", run_eagerly=True, jit_compile=False, steps_per_execution=1, backend="reference")


def test_metrics_names_as_keras_lists_them():
    ours, theirs = twins(two_outputs)
    assert ours.metrics_names == theirs.metrics_names == []
    y = [BITS.astype("float32"), RNG.random((13, 2)).astype("float32")]
    for settings in (dict(loss=["mse", "mse"]), dict(loss=["mse", "mse"], metrics=["mae", "mse"])):
        ours.compile(optimizer="sgd", backend="reference", **settings)
        theirs.compile(optimizer="sgd", **settings)
        assert ours.metrics_names == theirs.metrics_names
        ours.evaluate(X, y, verbose=0)
        theirs.evaluate(X, y, verbose=0)
        assert ours.metrics_names == theirs.metrics_names
    single, keras_single = twins(dense_model, optimizer="sgd", loss="mse", weighted_metrics=["mae"])
    assert single.metrics_names == keras_single.metrics_names == ["loss", "compile_metrics"]


def test_a_flat_metric_list_gives_each_output_its_entry_as_in_keras():
    y = [BITS.astype("float32"), RNG.random((13, 2)).astype("float32")]
    ours, theirs = twins(two_outputs, optimizer="sgd", loss=["mse", "mse"], metrics=["mae", ["mse", "mae"]])
    a, b = _logs_of_both(ours, theirs, X, y)
    assert set(b) == {"loss", "cls_loss", "reg_loss", "cls_mae", "reg_mse", "reg_mae"}
    assert_logs_close(a, b)
    theirs.compile(optimizer="sgd", loss=["mse", "mse"], metrics=["mae"])
    with pytest.raises(ValueError):
        theirs.evaluate(X, y, verbose=0)
    with pytest.raises(KcompError, match="1 metric entries for a model with 2 outputs"):
        ours.compile(optimizer="sgd", loss=["mse", "mse"], metrics=["mae"], backend="reference")


@pytest.mark.parametrize("loss", ["mse", ["mse", None], {"cls": None, "reg": "mae"}])
def test_one_loss_for_every_output_or_none_for_some(loss):
    y = [BITS.astype("float32"), RNG.random((13, 2)).astype("float32")]
    ours, theirs = twins(two_outputs, optimizer="sgd", loss=loss)
    assert_logs_close(*_logs_of_both(ours, theirs, X, y))
    with pytest.raises(KcompError, match="loss per output"):
        ours.compile(optimizer="sgd", loss="mse", loss_weights=[1.0, 2.0], backend="reference")


@pytest.mark.parametrize("make, case", [
    (lambda lib: lib.losses.BinaryFocalCrossentropy(), "bce"),
    (lambda lib: lib.losses.BinaryFocalCrossentropy(apply_class_balancing=True, gamma=1.5, label_smoothing=0.1), "bce"),
    (lambda lib: lib.losses.BinaryFocalCrossentropy(from_logits=True), "bce"),
    (lambda lib: "binary_focal_crossentropy", "bce"),
    (lambda lib: lib.losses.CategoricalFocalCrossentropy(), "ce"),
    (lambda lib: lib.losses.CategoricalFocalCrossentropy(alpha=0.5, gamma=3.0, label_smoothing=0.1), "ce"),
    (lambda lib: "categorical_focal_crossentropy", "ce"),
    (lambda lib: lib.losses.CategoricalGeneralizedCrossEntropy(q=0.7), "sparse_categorical_crossentropy"),
    (lambda lib: lib.losses.Dice(), "ce"), (lambda lib: "dice", "bce"), (lambda lib: lib.losses.Dice(axis=-1), "ce"),
    (lambda lib: lib.losses.Tversky(alpha=0.3, beta=0.7), "ce"), (lambda lib: "tversky", "ce"),
])
def test_focal_dice_tversky_and_generalized_losses(make, case):
    build, y = _case(case)
    if case == "bce":
        y = y.astype("float32")[:, None]  # these formulas take targets of the outputs' shape (Keras does not reconcile)
    ours, theirs = twins(build, optimizer=lambda lib: lib.optimizers.SGD(0.1), loss=make)
    weights = np.linspace(0.5, 1.5, 13).astype("float32")
    a, b = _evaluate_both(ours, theirs, X, y, sample_weight=weights)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(ours.train_on_batch(X, y), theirs.train_on_batch(X, y), rtol=2e-5, atol=1e-6)
    a, b = _evaluate_both(ours, theirs, X, y)
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_validation_weights_steps_and_frequency_as_keras():
    y = BITS.astype("float32")
    val_weights = np.linspace(0.2, 3.0, 13).astype("float32")
    ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(0.1), loss="mse", metrics=["mae"])
    kwargs = dict(batch_size=5, epochs=4, shuffle=False, verbose=0, validation_data=(X, y, val_weights),
                  validation_steps=2, validation_batch_size=4, validation_freq=[2, 4])
    h_ours, h_theirs = ours.fit(X, y, **kwargs), theirs.fit(X, y, **kwargs)
    assert_logs_close(h_ours.history, h_theirs.history, rtol=2e-5)
    assert len(h_ours.history["val_loss"]) == 2
    with pytest.raises(KcompError, match="validation_freq"):
        ours.fit(X, y, validation_data=(X, y), validation_freq=0, verbose=0)


def test_callbacks_see_the_hooks_keras_calls_in_fit_evaluate_and_predict():
    def recorder(lib):
        class Record(lib.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.events = []

        hooks = ["on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
                 "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
                 "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"]
        for hook in hooks:
            setattr(Record, hook, lambda self, *args, hook=hook, **kwargs: self.events.append((hook, *[a for a in args if isinstance(a, int)])))
        return Record()

    y = BITS.astype("float32")
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse")
    events = []
    for model, lib in ((ours, kcomp), (theirs, keras)):
        record = recorder(lib)
        model.fit(X, y, batch_size=5, epochs=2, validation_data=(X, y), validation_batch_size=7, verbose=0, callbacks=[record])
        model.evaluate(X, y, batch_size=6, verbose=0, callbacks=[record])
        model.predict(X, batch_size=8, verbose=0, callbacks=[record])
        events.append(record.events)
    assert events[0] == events[1] and len(events[0]) > 30


def test_model_checkpoint_files_and_rules_as_keras(tmp_path):
    y = BITS.astype("float32")
    for lib in (kcomp, keras):
        with pytest.raises(ValueError):
            lib.callbacks.ModelCheckpoint(str(tmp_path / "w.npz.h5"), save_weights_only=True)
        with pytest.raises(ValueError):
            lib.callbacks.ModelCheckpoint(str(tmp_path / "m.npz"))  # a whole model goes to .keras
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse")
    for model, lib in ((ours, kcomp), (theirs, keras)):
        folder = tmp_path / lib.__name__
        model.fit(X, y, batch_size=5, epochs=3, shuffle=False, verbose=0, validation_data=(X, y), callbacks=[
            lib.callbacks.ModelCheckpoint(str(folder / "m-{epoch}.keras"), save_best_only=True, initial_value_threshold=10.0),
            lib.callbacks.ModelCheckpoint(str(folder / "w-{epoch}-{batch}.weights.h5"), save_weights_only=True, save_freq=2),
        ])
    names = sorted(p.name for p in (tmp_path / "kcomp").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "keras").iterdir()) and "w-2-1.weights.h5" in names
    for name in (n for n in names if n.endswith(".keras")):  # the same checkpoints hold the same models
        a, b = (kcomp.models.load_model(tmp_path / lib / name) for lib in ("kcomp", "keras"))
        np.testing.assert_allclose(a.predict(X, verbose=0), b.predict(X, verbose=0), rtol=1e-5, atol=1e-6)


CALLBACK_CASES = {
    "early_stopping_restores_best": lambda lib: [lib.callbacks.EarlyStopping(monitor="loss", patience=1, min_delta=0.5,
                                                                             restore_best_weights=True)],
    "early_stopping_baseline": lambda lib: [lib.callbacks.EarlyStopping(monitor="val_loss", patience=2, baseline=1e-4,
                                                                        restore_best_weights=True)],
    "early_stopping_start_epoch": lambda lib: [lib.callbacks.EarlyStopping(monitor="loss", patience=0, start_from_epoch=2,
                                                                           min_delta=1.0)],
    "early_stopping_max_mode": lambda lib: [lib.callbacks.EarlyStopping(monitor="val_mae", mode="max", patience=1,
                                                                        restore_best_weights=True)],
    "reduce_lr_on_plateau": lambda lib: [lib.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1,
                                                                         min_delta=0.5, cooldown=1, min_lr=0.01)],
    "terminate_on_nan": lambda lib: [lib.callbacks.TerminateOnNaN()],
}


@pytest.mark.parametrize("case", sorted(CALLBACK_CASES))
def test_training_callbacks_stop_restore_and_log_as_keras(case):
    y = BITS.astype("float32")
    lr = 1e12 if case == "terminate_on_nan" else 0.5
    ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(lr), loss="mse", metrics=["mae"])
    runs = []
    for model, lib in ((ours, kcomp), (theirs, keras)):
        history = model.fit(X, y, epochs=6, batch_size=13, shuffle=False, verbose=0, validation_data=(X, y),
                            callbacks=CALLBACK_CASES[case](lib))
        runs.append((history.history, model.predict(X, verbose=0)))
    assert_logs_close(runs[0][0], runs[1][0], rtol=2e-5)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=2e-5, atol=1e-6)  # weights restored (or not) alike


def test_csv_logger_writes_keras_columns(tmp_path):
    import csv

    y = BITS.astype("float32")
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse", metrics=["mae", "accuracy"])
    tables = []
    for model, lib in ((ours, kcomp), (theirs, keras)):
        path = tmp_path / f"{lib.__name__}.csv"
        model.fit(X, y, epochs=3, batch_size=13, shuffle=False, verbose=0, validation_data=(X, y), validation_freq=2,
                  callbacks=[lib.callbacks.CSVLogger(str(path))])
        with open(path) as f:
            tables.append(list(csv.reader(f)))
    assert tables[0][0] == tables[1][0]  # the same columns in the same order
    for ours_row, keras_row in zip(tables[0][1:], tables[1][1:]):
        assert [v == "NA" for v in ours_row] == [v == "NA" for v in keras_row]
        np.testing.assert_allclose([float(v) for v in ours_row if v != "NA"], [float(v) for v in keras_row if v != "NA"],
                                   rtol=2e-5)


@pytest.mark.parametrize("build, settings", [
    (two_outputs, dict(loss=["mse", "mse"], metrics=[["mae", "accuracy"], ["mse", "AUC"]])),
    (dense_model, dict(loss="mse", metrics=["mse", "mae", "acc", "AUC"])),
])
def test_evaluate_and_train_on_batch_return_lists_in_keras_order(build, settings):
    y = [BITS.astype("float32"), RNG.random((13, 2)).astype("float32")] if build is two_outputs else BITS.astype("float32")
    ours, theirs = twins(build, optimizer="sgd", **settings)
    np.testing.assert_allclose(ours.evaluate(X, y, verbose=0), theirs.evaluate(X, y, verbose=0), rtol=2e-5)
    np.testing.assert_allclose(ours.test_on_batch(X, y), theirs.test_on_batch(X, y), rtol=2e-5)


@pytest.mark.parametrize("metric", ["AUC", "Precision", "recall", "TruePositives"])
def test_confusion_metrics_count_any_non_zero_target_as_positive(metric):
    """Keras casts targets to bool for its confusion metrics: a soft label of 0.3 is a positive."""
    y = np.round(RNG.random((13, 1)), 1).astype("float32")
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse", metrics=[metric])
    assert_logs_close(*_logs_of_both(ours, theirs, X, y), rtol=2e-5)


def test_validation_split_keeps_the_sample_weights_and_class_weight_rules():
    y = BITS.astype("float32")
    weights = np.linspace(0.2, 3.0, 13).astype("float32")
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse", weighted_metrics=["mae"])
    kwargs = dict(batch_size=4, epochs=2, shuffle=False, verbose=0, validation_split=0.3)
    h_ours = ours.fit(X, y, sample_weight=weights[:, None], **kwargs)  # (N, 1) weights, as Keras takes them
    h_theirs = theirs.fit(X, y, sample_weight=weights[:, None], **kwargs)
    assert_logs_close(h_ours.history, h_theirs.history, rtol=2e-5)
    with pytest.raises(KcompError, match="one or the other"):
        ours.fit(X, y, sample_weight=weights, class_weight={0: 1.0, 1: 2.0}, verbose=0)
    two, _ = twins(two_outputs, optimizer="sgd", loss=["mse", "mse"])
    with pytest.raises(KcompError, match="one output"):
        two.fit(X, [y, RNG.random((13, 2))], class_weight={0: 1.0, 1: 2.0}, verbose=0)
    with pytest.raises(KcompError, match="sample weights have dtype"):
        ours.fit(X, y, sample_weight=np.array(["a"] * 13), verbose=0)


@pytest.mark.parametrize("monitor", ["val_r2_score", "val_f1_score", "val_mae", "val_pearson_correlation"])
def test_callbacks_know_which_way_each_metric_improves_as_keras(monitor):
    """EarlyStopping in mode "auto" on a metric that should rise (R2, F1) or fall (mae)."""
    y = BITS.astype("float32")[:, None]
    metrics = ["r2_score", "f1_score", "mae", "pearson_correlation"]
    ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(0.5), loss="mse", metrics=metrics)
    runs = []
    for model, lib in ((ours, kcomp), (theirs, keras)):
        stop = lib.callbacks.EarlyStopping(monitor=monitor, patience=1, restore_best_weights=True)
        history = model.fit(X, y, epochs=6, batch_size=13, shuffle=False, verbose=0, validation_data=(X, y), callbacks=[stop])
        runs.append((len(history.history["loss"]), model.predict(X, verbose=0)))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=2e-5, atol=1e-6)


def test_a_metric_of_unknown_direction_needs_a_mode_as_in_keras():
    def my_metric(y_true, y_pred):
        return kcomp.ops.abs(kcomp.ops.subtract(y_true, y_pred))

    ours, _ = twins(dense_model, optimizer="sgd", loss="mse", metrics=[my_metric])
    y = BITS.astype("float32")[:, None]
    with pytest.raises(KcompError, match="mode='max' or mode='min'"):
        ours.fit(X, y, epochs=2, verbose=0, callbacks=[kcomp.callbacks.EarlyStopping(monitor="my_metric")])
    ours.fit(X, y, epochs=2, verbose=0, callbacks=[kcomp.callbacks.EarlyStopping(monitor="my_metric", mode="min")])
    # (N,) targets against (N, 1) predictions would make the function an (N, N) table: refused, named.
    with pytest.raises(KcompError, match=r"my_metric gave values of shape \(None, None\)"):
        ours.evaluate(X, y[:, 0], verbose=0)


@pytest.mark.parametrize("metric", [lambda lib: lib.metrics.TopKCategoricalAccuracy(1), lambda lib: lib.metrics.TopKCategoricalAccuracy(2),
                                    lambda lib: lib.metrics.SparseTopKCategoricalAccuracy(2)])
def test_top_k_counts_ties_as_keras(metric):
    """A model whose outputs tie (zero weights: a uniform softmax) hits every label in Keras's top-k."""
    sparse = isinstance(metric(keras), keras.metrics.SparseTopKCategoricalAccuracy)
    build, y = _case("sparse_categorical_crossentropy" if sparse else "categorical_crossentropy")
    ours, theirs = twins(build, optimizer="sgd", loss="sparse_categorical_crossentropy" if sparse else "categorical_crossentropy",
                         metrics=lambda lib: [metric(lib)])
    zeros = [w * 0 for w in ours.get_weights()]
    for model in (ours, theirs):
        model.set_weights(zeros)
    a, b = _logs_of_both(ours, theirs, X, y)
    assert_logs_close(a, b)
    assert min(v for k, v in a.items() if k != "loss") == 1.0


def test_steps_per_epoch_goes_on_through_the_data_across_epochs_as_keras():
    x = RNG.random((20, 4)).astype("float32")
    y = RNG.random(20).astype("float32")
    ours, theirs = twins(dense_model, optimizer=lambda lib: lib.optimizers.SGD(0.3), loss="mse")
    histories = []
    for model in (ours, theirs):
        with pytest.warns(UserWarning):
            histories.append(model.fit(x, y, batch_size=5, epochs=3, steps_per_epoch=3, shuffle=False, verbose=0).history)
    assert_logs_close(*histories, rtol=2e-5)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=2e-5, atol=1e-6)


def test_metrics_with_several_values_show_on_the_progress_bar_and_in_the_logs(capsys):
    y = BITS.astype("float32")[:, None]
    ours, theirs = twins(dense_model, optimizer="sgd", loss="mse",
                         metrics=lambda lib: [lib.metrics.TruePositives([0.3, 0.6]), lib.metrics.F1Score()])
    h_ours = ours.fit(X, y, epochs=2, batch_size=5, shuffle=False, verbose=1, validation_data=(X, y))
    h_theirs = theirs.fit(X, y, epochs=2, batch_size=5, shuffle=False, verbose=0, validation_data=(X, y))
    assert "true_positives:" in capsys.readouterr().out
    assert_logs_close(h_ours.history, h_theirs.history, rtol=2e-5)


def test_metric_settings_survive_a_keras_file_both_ways(tmp_path):
    """A .keras file keeps each metric's settings (top-k's k, thresholds, F-score averages, R2's
    aggregation, IoU's classes), so the model loaded by Keras or kcomp evaluates the same."""
    build, y = _case("categorical_crossentropy")
    make = lambda lib: [lib.metrics.TopKCategoricalAccuracy(2), lib.metrics.BinaryAccuracy(threshold=0.3),
                        lib.metrics.F1Score(average="macro"), lib.metrics.R2Score(num_regressors=1),
                        lib.metrics.OneHotIoU(3, [0, 2])]
    ours, _ = twins(build, optimizer="sgd", loss="categorical_crossentropy", metrics=make)
    ours.save(tmp_path / "m.keras")
    want = ours.evaluate(X, y, verbose=0, return_dict=True)
    for loaded in (keras.saving.load_model(tmp_path / "m.keras"), kcomp.models.load_model(tmp_path / "m.keras")):
        assert_logs_close(loaded.evaluate(X, y, verbose=0, return_dict=True), want, rtol=2e-5)
