"""Metrics with Keras's names. A metric emits per-sample values into the step
graph and what a batch adds to its running state (`batch_state`); the step
adds that into a device tensor, and the runtime divides only when a progress
line or the epoch's logs need the number.
"""

import math

import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError


class Metric:
    """The mean of per-sample values, accumulated over batches.

    A metric is stateless: the training loop keeps a state per run (training,
    validation) and folds each batch's values into it with `accumulate`.
    """

    def __init__(self, name=None):
        self.name = name or _default_name(type(self).__name__)

    def values(self, y_true, y_pred):
        """The per-batch values, as graph ops on the targets and predictions."""
        raise NotImplementedError

    def batch_state(self, values):
        """Graph ops: what one batch adds to the running state (here the values' sum), and how
        many values each sample contributes (the mean's divisor grows by that per sample)."""
        if values.dtype != "float32":
            values = ops.cast(values, "float32")
        return ops.sum(values), math.prod(values.shape[1:])

    def result(self, state: torch.Tensor, count: int) -> float:
        """The metric from its running state and the number of values added into it."""
        return float(state) / count if count else 0.0


def _default_name(cls_name):
    from kcomp.backend import to_snake_case

    return to_snake_case(cls_name)


class _Correct(Metric):
    kind = ""

    def __init__(self, name=None, threshold=0.5, k=5):
        self.threshold, self.k = float(threshold), int(k)
        super().__init__(name)

    def values(self, y_true, y_pred):
        return ops.emit("correct", y_true, y_pred, kind=self.kind, threshold=self.threshold, k=self.k)


class CategoricalAccuracy(_Correct):
    kind = "categorical"


class SparseCategoricalAccuracy(_Correct):
    kind = "sparse_categorical"


class BinaryAccuracy(_Correct):
    kind = "binary"


class TopKCategoricalAccuracy(_Correct):
    kind = "top_k"


class SparseTopKCategoricalAccuracy(_Correct):
    kind = "sparse_top_k"


class _LossMetric(Metric):
    fn = None

    def values(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred)


class MeanSquaredError(_LossMetric):
    fn = staticmethod(losses.mean_squared_error)


class MeanAbsoluteError(_LossMetric):
    fn = staticmethod(losses.mean_absolute_error)


class _Confusion(Metric):
    """Metrics from true/false positive/negative counts at thresholds (Keras's confusion metrics)."""

    def __init__(self, thresholds, name=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        super().__init__(name)

    def values(self, y_true, y_pred):
        return ops.emit("confusion_counts", y_true, y_pred, thresholds=self.thresholds)

    def batch_state(self, values):
        return values, 0  # the batch's counts per threshold: the state adds them up (float32, exact to 2**24)


class Precision(_Confusion):
    """TP / (TP + FP) with predictions above `thresholds` (default 0.5) counted positive."""

    def __init__(self, thresholds=None, name=None):
        super().__init__([0.5] if thresholds is None else [thresholds] if isinstance(thresholds, (int, float)) else thresholds, name)

    def result(self, state, count=0) -> float:
        tp, fp, _, _ = state[0].tolist()  # one read-back
        return tp / (tp + fp) if tp + fp else 0.0


class Recall(Precision):
    """TP / (TP + FN)."""

    def result(self, state, count=0) -> float:
        tp, _, _, fn = state[0].tolist()
        return tp / (tp + fn) if tp + fn else 0.0


class AUC(_Confusion):
    """Area under the ROC (or PR) curve from num_thresholds evenly spaced thresholds, as Keras's AUC."""

    def __init__(self, num_thresholds=200, curve="ROC", name=None):
        if num_thresholds <= 1:
            raise ArgumentError(f"Received: num_thresholds={num_thresholds}. Expected an integer > 1.")
        if curve not in ("ROC", "PR"):
            raise ArgumentError(f"Received: curve={curve!r}. Expected 'ROC' or 'PR'.")
        eps = 1e-7  # Keras puts the end thresholds just outside [0, 1]
        inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.curve = curve
        super().__init__([0.0 - eps, *inner, 1.0 + eps], name)

    def result(self, state, count=0) -> float:
        tp, fp, tn, fn = (state.double()[:, i] for i in range(4))
        recall = tp / (tp + fn).clamp(min=1e-12)
        if self.curve == "ROC":
            x = fp / (fp + tn).clamp(min=1e-12)
            y = recall
        else:
            x = recall
            y = tp / (tp + fp).clamp(min=1e-12)
        # Riemann sum with interpolated heights, thresholds ascending (curve points descending).
        return float(((x[:-1] - x[1:]) * (y[:-1] + y[1:]) / 2).sum())


_BY_NAME = {
    "categorical_accuracy": CategoricalAccuracy, "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "precision": Precision, "recall": Recall, "auc": AUC,
}


def resolve_accuracy(loss, output_shape) -> Metric:
    """Keras's "accuracy": chosen from the loss, else from the output's last dimension."""
    name = getattr(loss, "name", "")
    if isinstance(loss, losses.SparseCategoricalCrossentropy) or name == "sparse_categorical_crossentropy":
        return SparseCategoricalAccuracy(name="accuracy")
    if isinstance(loss, losses.BinaryCrossentropy) or output_shape[-1] == 1:
        return BinaryAccuracy(name="accuracy")
    return CategoricalAccuracy(name="accuracy")


def get(identifier, loss=None, output_shape=None) -> Metric:
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        return resolve_accuracy(loss, output_shape)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier](name=identifier)
    from difflib import get_close_matches

    near = get_close_matches(str(identifier), [*_BY_NAME, "accuracy"], n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ArgumentError(f"Received: metric={identifier!r}, which kcomp does not know.{hint}")
