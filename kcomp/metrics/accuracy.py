"""Accuracy metrics: per-sample hits from the `correct` op (argmax match, threshold, top-k)."""

from kcomp import losses, ops
from kcomp.errors import ShapeError
from kcomp.metrics.base import Metric, _as_float_pair


class _Correct(Metric):
    kind = ""

    def __init__(self, name=None, threshold=0.5, k=5):
        self.threshold, self.k = float(threshold), int(k)
        super().__init__(name)

    def values(self, y_true, y_pred):
        if self.kind == "binary":  # Keras's binary_accuracy meets (N,) targets with (N, 1) predictions
            y_true, y_pred = losses.same_rank(y_true, y_pred)
        return ops.emit("correct", y_true, y_pred, kind=self.kind, threshold=self.threshold, k=self.k)


class CategoricalAccuracy(_Correct):
    kind = "categorical"

    def __init__(self, name=None, dtype=None):
        super().__init__(name)


class SparseCategoricalAccuracy(_Correct):
    kind = "sparse_categorical"

    def __init__(self, name=None, dtype=None):
        super().__init__(name)


class BinaryAccuracy(_Correct):
    kind = "binary"

    def __init__(self, name=None, dtype=None, threshold=0.5):
        super().__init__(name, threshold=threshold)


class TopKCategoricalAccuracy(_Correct):
    kind = "top_k"

    def __init__(self, k=5, name=None, dtype=None):
        super().__init__(name, k=k)

    def values(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        if classes is not None and self.k > classes:  # Keras fails here too (torch's topk)
            raise ShapeError(f"{self.name}: k={self.k} is more than the {classes} classes of the predictions; give k <= {classes}.")
        return super().values(y_true, y_pred)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    kind = "sparse_top_k"


class Accuracy(Metric):
    """Keras's Accuracy class: how often targets equal predictions exactly (the string
    "accuracy" instead picks binary, sparse or categorical accuracy; see AutoAccuracy)."""

    def values(self, y_true, y_pred):
        return ops.emit("equal", *_as_float_pair(y_true, y_pred))


class AutoAccuracy(Metric):
    """metrics=["accuracy"] (or "acc", any case): as Keras, binary accuracy when the predictions
    end in one unit, sparse categorical when the targets have a lower rank or end in one label,
    else categorical, chosen from the shapes the step sees."""

    def values(self, y_true, y_pred):
        t, p = ops.shape(y_true), ops.shape(y_pred)
        if p[-1] == 1:
            chosen = BinaryAccuracy()
        elif len(t) < len(p) or (t[-1] == 1 and p[-1] > 1):
            chosen = SparseCategoricalAccuracy()
        else:
            chosen = CategoricalAccuracy()
        return chosen.values(y_true, y_pred)


