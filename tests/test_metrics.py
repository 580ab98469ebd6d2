"""Metrics against scikit-learn's, accumulated over several batches as fit and evaluate do."""

import numpy as np
import pytest
from sklearn import metrics as sk

from kcomp import metrics
from kcomp.layers import Dense, Input
from kcomp.models import Sequential


def _model_and_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(150, 3)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=150) * 0.8 > 0).astype("float32")[:, None]
    model = Sequential([Input(shape=(3,)), Dense(1, activation="sigmoid")])
    return model, x, y


@pytest.mark.parametrize("name, sk_fn", [
    ("precision", lambda y, p: sk.precision_score(y, p > 0.5)),
    ("recall", lambda y, p: sk.recall_score(y, p > 0.5)),
    ("binary_accuracy", lambda y, p: sk.accuracy_score(y, p > 0.5)),
])
def test_threshold_metrics_equal_sklearn(name, sk_fn):
    model, x, y = _model_and_data()
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[name])
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)  # five batches, one ragged
    p = model.predict(x, verbose=0)
    assert np.isclose(logs[name], sk_fn(y[:, 0], p[:, 0]), atol=1e-6)


def test_auc_is_close_to_sklearns_exact_value():
    model, x, y = _model_and_data(1)
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=[metrics.AUC(), metrics.AUC(curve="PR", name="pr_auc")])
    logs = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)[:, 0]
    assert abs(logs["auc"] - sk.roc_auc_score(y[:, 0], p)) < 5e-3  # 200 thresholds vs the exact area
    assert abs(logs["pr_auc"] - sk.average_precision_score(y[:, 0], p)) < 3e-2


def test_fit_reports_auc_for_training_and_validation():
    model, x, y = _model_and_data(2)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy", "auc"])
    history = model.fit(x, y, epochs=2, validation_split=0.2, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
    assert all(0 <= v <= 1 for v in history.history["val_auc"])
