"""Metrics from confusion counts at thresholds: Precision, Recall, AUC, the four counts, and the
operating-point metrics (PrecisionAtRecall and its family)."""

import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError
from kcomp.metrics.base import Metric, _unique_name


class _Confusion(Metric):
    """Metrics from true/false positive/negative counts at thresholds (Keras's confusion metrics)."""

    def __init__(self, thresholds, name=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        # Keras names these automatically and uniquely per session: auc, auc_1, ...
        super().__init__(name or _unique_name(type(self).__name__))

    def state(self, y_true, y_pred, sample_weight=None):
        # The batch's counts per threshold (weighted by the samples' weights for a weighted metric):
        # the running state adds them up (float32, exact to 2**24 for unit weights).
        y_true, y_pred = losses.same_rank(y_true, y_pred)  # as Keras's confusion-matrix update
        weights = [] if sample_weight is None else [sample_weight]
        return ops.emit("confusion_counts", y_true, y_pred, *weights, thresholds=self.thresholds), 0


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


class _AtOperatingPoint(_Confusion):
    """Keras's SensitivityAtSpecificity family: at `num_thresholds` thresholds spread evenly over
    [0, 1], the best `dependent` value among the thresholds where `constrained` >= `value`."""

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        what = type(self).argument
        if not 0 <= value <= 1:
            raise ArgumentError(f"Received: {what}={value}. Expected a number in [0, 1].")
        if num_thresholds <= 0:
            raise ArgumentError(f"Received: num_thresholds={num_thresholds}. Expected an integer > 0.")
        if class_id is not None:
            raise ArgumentError(f"Received: class_id={class_id}: kcomp does not take class_id yet; slice that output instead.")
        self.value, self.num_thresholds = float(value), num_thresholds
        inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        super().__init__([0.5] if num_thresholds == 1 else [0.0, *inner, 1.0], name)

    @staticmethod
    def _ratio(a, b):
        return torch.where(a + b > 0, a / (a + b).clamp(min=1e-300), torch.zeros_like(a))  # Keras's divide_no_nan

    def result(self, state, count=0):
        tp, fp, tn, fn = (state.double()[:, i] for i in range(4))
        rates = {"sensitivity": self._ratio(tp, fn), "specificity": self._ratio(tn, fp), "precision": self._ratio(tp, fp)}
        rates["recall"] = rates["sensitivity"]
        constrained, dependent = rates[type(self).argument], rates[type(self).reported]
        return float(torch.where(constrained >= self.value, dependent, torch.zeros_like(dependent)).max().clamp(min=0))


def _at_operating_point(class_name, argument, reported):
    def __init__(self, *args, **kwargs):
        if args:
            kwargs[argument] = args[0]
            args = args[1:]
        if argument not in kwargs:
            raise ArgumentError(f"{class_name} needs {argument}=..., the {argument} to hold (a number in [0, 1]).")
        _AtOperatingPoint.__init__(self, kwargs.pop(argument), *args, **kwargs)

    return type(class_name, (_AtOperatingPoint,), {"argument": argument, "reported": reported, "__init__": __init__})


SensitivityAtSpecificity = _at_operating_point("SensitivityAtSpecificity", "specificity", "sensitivity")
SpecificityAtSensitivity = _at_operating_point("SpecificityAtSensitivity", "sensitivity", "specificity")
PrecisionAtRecall = _at_operating_point("PrecisionAtRecall", "recall", "precision")
RecallAtPrecision = _at_operating_point("RecallAtPrecision", "precision", "recall")


class _Count(_Confusion):
    """One of the four confusion counts at `thresholds` (default 0.5): Keras's TruePositives,
    FalsePositives, TrueNegatives, FalseNegatives (a list of thresholds gives a list)."""

    column = 0

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__([0.5] if thresholds is None else [thresholds] if isinstance(thresholds, (int, float)) else thresholds, name)
        self.listed = isinstance(thresholds, (list, tuple))

    def result(self, state, count=0):
        counts = state[:, self.column].tolist()
        return counts if self.listed else counts[0]


TruePositives = type("TruePositives", (_Count,), {"column": 0})
FalsePositives = type("FalsePositives", (_Count,), {"column": 1})
TrueNegatives = type("TrueNegatives", (_Count,), {"column": 2})
FalseNegatives = type("FalseNegatives", (_Count,), {"column": 3})

