"""Metrics with Keras's names. A metric emits per-sample values into the step
graph; the runtime adds them up on the device across batches and divides
only when a progress line or the epoch's logs need the number.
"""

import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError


class Metric:
    """The mean of per-sample values, accumulated over batches."""

    def __init__(self, name=None):
        self.name = name or _default_name(type(self).__name__)
        self.reset_state()

    def values(self, y_true, y_pred):
        raise NotImplementedError

    def reset_state(self):
        self.total = None  # a device tensor once the first batch arrives
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        s = values.detach().float().sum()
        self.total = s if self.total is None else self.total + s
        self.count += values.numel()

    def result(self) -> float:
        return float(self.total) / self.count if self.count else 0.0


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


_BY_NAME = {
    "categorical_accuracy": CategoricalAccuracy, "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy, "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
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
