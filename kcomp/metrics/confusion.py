"""Metrics from confusion counts at thresholds: Precision, Recall, AUC, the four counts, and the
operating-point metrics (PrecisionAtRecall and its family)."""

import inspect

import numpy as np
import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError
from kcomp.metrics.base import Metric, _unique_name

_EPSILON = 1e-7  # Keras's backend.epsilon(): AUC's end thresholds lie this far outside [0, 1]
_NEG_INF = -1e10  # Keras's metrics_utils.NEG_INF: what top_k puts in place of the values it drops


def _thresholds(thresholds, default=0.5) -> list:
    """Keras's `thresholds` argument as a list: None gives [default], a number [that number]."""
    if thresholds is None:
        return [default]
    listed = list(thresholds) if isinstance(thresholds, (list, tuple)) else [thresholds]
    bad = [t for t in listed if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 <= t <= 1]
    if bad:
        raise ArgumentError(f"Received: thresholds={thresholds!r}. Threshold values must be numbers in [0, 1]; {bad} are not.")
    return listed


def _evenly_spaced(num_thresholds) -> list:
    """The num_thresholds - 2 thresholds strictly inside (0, 1), evenly spaced: Keras's grid
    (AUC and the operating-point metrics add their own end points)."""
    return [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]


def _evenly_spread(thresholds) -> bool:
    """Keras's is_evenly_distributed_thresholds: at least 3 thresholds, each near i / (n - 1). Keras
    counts such thresholds by buckets of the predictions clipped to [0, 1]."""
    n = len(thresholds)
    return n >= 3 and bool(np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1), atol=_EPSILON))


def _constant(value: float):
    """A float32 scalar: a constant node while a step is traced, else a tensor."""
    builder = ops.current_builder()
    return torch.tensor(value, dtype=torch.float32) if builder is None else builder.emit1("constant", [], value=value)


def _ratio(a, b):
    """a / (a + b), 0 where a + b is 0 (Keras's divide_no_nan)."""
    return torch.where(a + b > 0, a / (a + b).clamp(min=1e-300), torch.zeros_like(a))


def _count_argument(argument, value, minimum):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
        raise ArgumentError(f"Received: {argument}={value!r}. Expected an integer >= {minimum}.")


class _Confusion(Metric):
    """Metrics from true/false positive/negative counts at thresholds (Keras's confusion metrics).
    As Keras does: with `top_k`, only each row's k largest predictions (along the last axis) keep
    their values, the others become -1e10; then with `class_id`, only that column of the targets
    and predictions is counted."""

    def __init__(self, thresholds, name=None, class_id=None, from_logits=False, top_k=None, evenly=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        # Keras clips the predictions to [0, 1] where its thresholds are evenly spread (it counts by buckets).
        self.clipped = _evenly_spread(self.thresholds) if evenly is None else evenly
        _count_argument("class_id", class_id, 0)
        _count_argument("top_k", top_k, 1)
        self.class_id, self.from_logits, self.top_k = class_id, from_logits, top_k
        # Keras names these automatically and uniquely per session: auc, auc_1, ...
        super().__init__(name or _unique_name(type(self).__name__))

    def state(self, y_true, y_pred, sample_weight=None):
        # The batch's counts per threshold (weighted by the samples' weights for a weighted metric):
        # the running state adds them up (float32, exact to 2**24 for unit weights).
        y_true, y_pred = self._prepared(y_true, y_pred)
        if self.class_id is not None:
            y_true, y_pred = self._column(y_true, y_pred)
        weights = [] if sample_weight is None else [sample_weight]
        return ops.emit("confusion_counts", y_true, y_pred, *weights, thresholds=self.thresholds), 0

    def _prepared(self, y_true, y_pred):
        """Targets and predictions as Keras's confusion-matrix update counts them."""
        y_true, y_pred = losses.same_rank(y_true, y_pred)
        if self.from_logits:
            y_pred = ops.sigmoid(y_pred)
        if self.top_k is not None:
            y_pred = self._top_k_only(y_pred)
        if self.clipped:
            y_pred = ops.clip(y_pred, 0.0, 1.0)
        return y_true, y_pred

    def _top_k_only(self, y_pred):
        """y_pred with the values outside each row's top_k largest set to -1e10 (Keras's
        _filter_top_k), computed by comparing every pair in a row: a value is kept when fewer than
        k values of its row are larger, or equal and earlier (ties go to the earlier column;
        Keras's torch.topk leaves the order of ties unspecified)."""
        shape = ops.shape(y_pred)
        if len(shape) < 2 or not all(isinstance(n, int) for n in shape[1:]):
            raise ArgumentError(f"{type(self).__name__}(top_k={self.top_k}) needs predictions of a known shape "
                                f"(num_samples, ..., num_classes); received {shape}.")
        lead, c = tuple(y_pred.shape)[:-1], shape[-1]  # the batch stays symbolic ("N")
        row, column = ops.reshape(y_pred, (*lead, 1, c)), ops.reshape(y_pred, (*lead, c, 1))  # [.., i, j]: x_j, x_i
        place = ops.concatenate([ops.reshape(_constant(float(i)), (1,)) for i in range(c)], axis=0)  # 0 .. c-1
        earlier = ops.emit("greater", ops.reshape(place, (c, 1)), ops.reshape(place, (1, c)))  # [i, j]: j < i
        ahead = ops.add(ops.emit("greater", row, column), ops.multiply(ops.emit("equal", row, column), earlier))
        kept = ops.emit("greater", _constant(self.top_k - 0.5), ops.sum(ahead, axis=-1))
        dropped = ops.subtract(_constant(1.0), kept)
        return ops.add(ops.multiply(y_pred, kept), ops.multiply(dropped, _NEG_INF))

    def _column(self, y_true, y_pred, index=None, why=None):
        """Column `index` (default class_id) of both, keeping the axis (Keras's y[..., class_id, None])."""
        index = self.class_id if index is None else index
        why = why or f"class_id={self.class_id}"
        shape = ops.shape(y_pred)
        if len(shape) < 2:
            raise ArgumentError(f"{type(self).__name__}({why}) needs predictions of shape "
                                f"(num_samples, num_classes); received {shape}.")
        if isinstance(shape[-1], int) and index >= shape[-1]:
            raise ArgumentError(f"Received: class_id={index} for predictions of shape {shape}. "
                                f"Expected a class id in [0, {shape[-1]}).")
        axis = len(shape) - 1
        return tuple(ops.emit("slice", y, axis=axis, start=index, stop=index + 1) for y in (y_true, y_pred))

    def get_config(self) -> dict:
        """Keras's config of this metric (what a .keras file's compile config holds)."""
        return {"name": self.name, "dtype": "float32"}


class _AtThresholds(_Confusion):
    """A value per threshold of `thresholds` (default 0.5): one number for one threshold, a list
    (one per threshold) for several, as Keras returns."""

    def __init__(self, thresholds=None, name=None, class_id=None, top_k=None):
        listed = _thresholds(thresholds, 0.5 if top_k is None else _NEG_INF)  # Keras's defaults
        super().__init__(listed, name, class_id, top_k=top_k)
        self.listed = len(listed) > 1
        self.init_thresholds = list(thresholds) if isinstance(thresholds, tuple) else thresholds

    def get_config(self) -> dict:
        return {**super().get_config(), "thresholds": self.init_thresholds}

    def values_at(self, state) -> list:
        raise NotImplementedError

    def result(self, state, count=0):
        values = self.values_at(state.double())
        return values.tolist() if self.listed else float(values[0])


class Precision(_AtThresholds):
    """TP / (TP + FP) with predictions above `thresholds` (default 0.5) counted positive."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        super().__init__(thresholds, name, class_id, top_k)

    def values_at(self, state):
        return _ratio(state[:, 0], state[:, 1])

    def get_config(self) -> dict:
        return {**super().get_config(), "top_k": self.top_k, "class_id": self.class_id}


class Recall(Precision):
    """TP / (TP + FN)."""

    def values_at(self, state):
        return _ratio(state[:, 0], state[:, 3])


_CURVES = {"ROC": "ROC", "roc": "ROC", "PR": "PR", "pr": "PR", "PRGAIN": "PRGAIN", "prgain": "PRGAIN"}
_SUMMATIONS = ("interpolation", "minoring", "majoring")


class AUC(_Confusion):
    """Area under the ROC (or PR, or PR-gain) curve from num_thresholds evenly spaced thresholds
    (or the given `thresholds`), summed as Keras's AUC does for each `summation_method`.

    multi_label=True: one curve per label (column of (num_samples, num_labels) predictions), and
    the mean of their areas, weighted by label_weights when given. multi_label=False with
    label_weights: one curve, each element counted with its label's weight (as Keras)."""

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        if curve not in _CURVES:
            raise ArgumentError(f"Received: curve={curve!r}. Expected 'ROC', 'PR' or 'PRGAIN'.")
        method = summation_method.lower() if isinstance(summation_method, str) else summation_method
        if method not in _SUMMATIONS:
            raise ArgumentError(f"Received: summation_method={summation_method!r}. Expected one of {list(_SUMMATIONS)}.")
        if num_labels is not None and not multi_label:
            raise ArgumentError(f"Received: num_labels={num_labels} with multi_label=False: "
                                "num_labels is needed only when multi_label is True.")
        _count_argument("num_labels", num_labels, 1)
        if label_weights is not None:
            try:
                label_weights = [float(w) for w in label_weights]
            except (TypeError, ValueError):
                label_weights = []
            if not label_weights or min(label_weights) < 0:
                raise ArgumentError(f"Received: label_weights={label_weights!r}. Expected a list of numbers >= 0, one per label.")
        self.multi_label, self.num_labels, self.label_weights = bool(multi_label), num_labels, label_weights
        if thresholds is not None:
            inner = sorted(_thresholds(thresholds))
        elif not isinstance(num_thresholds, int) or num_thresholds <= 1:
            raise ArgumentError(f"Received: num_thresholds={num_thresholds}. Expected an integer > 1.")
        else:
            inner = _evenly_spaced(num_thresholds)
        self.num_thresholds = len(inner) + 2
        self.init_thresholds = None if thresholds is None else inner
        self.curve, self.summation_method = _CURVES[curve], method
        evenly = thresholds is None or _evenly_spread([0.0, *inner, 1.0])  # as Keras's AUC decides
        super().__init__([0.0 - _EPSILON, *inner, 1.0 + _EPSILON], name, from_logits=bool(from_logits), evenly=evenly)

    def get_config(self) -> dict:
        config = {**super().get_config(), "num_thresholds": self.num_thresholds, "curve": self.curve,
                  "summation_method": self.summation_method, "multi_label": self.multi_label,
                  "num_labels": self.num_labels, "label_weights": self.label_weights, "from_logits": self.from_logits}
        if self.init_thresholds is not None:
            config["thresholds"] = list(self.init_thresholds)
        return config

    def state(self, y_true, y_pred, sample_weight=None):
        if not self.multi_label and self.label_weights is None:
            return super().state(y_true, y_pred, sample_weight)
        y_true, y_pred = self._prepared(y_true, y_pred)
        shape = ops.shape(y_pred)
        why = "multi_label=True" if self.multi_label else "label_weights=..."
        if self.multi_label and len(shape) != 2:
            raise ArgumentError(f"AUC(multi_label=True) needs predictions of rank 2 (num_samples, num_labels); received {shape}.")
        labels = shape[-1] if len(shape) >= 2 else None
        for argument, wanted in (("num_labels", self.num_labels),
                                 ("label_weights", None if self.label_weights is None else len(self.label_weights))):
            if wanted is not None and wanted != labels:
                raise ArgumentError(f"AUC({argument}=...) is for {wanted} labels; the predictions have shape {shape}.")
        weights = [] if sample_weight is None else [sample_weight]
        counts = [ops.emit("confusion_counts", *self._column(y_true, y_pred, label, why), *weights, thresholds=self.thresholds)
                  for label in range(labels)]
        if self.multi_label:  # one block of thresholds per label
            return ops.concatenate(counts, axis=0), 0
        total = ops.multiply(counts[0], self.label_weights[0])
        for label_counts, weight in zip(counts[1:], self.label_weights[1:]):
            total = ops.add(total, ops.multiply(label_counts, weight))
        return total, 0

    def result(self, state, count=0) -> float:
        tp, fp, tn, fn = state.double().reshape(-1, self.num_thresholds, 4).unbind(-1)  # a row per label
        areas = self._areas(tp, fp, tn, fn)
        if not self.multi_label:
            return float(areas[0])
        if self.label_weights is None:
            return float(areas.mean())
        weights = torch.tensor(self.label_weights, dtype=areas.dtype)
        return float((areas * weights).sum() / weights.sum()) if float(weights.sum()) else 0.0

    def _areas(self, tp, fp, tn, fn):
        """The area under each row's curve (counts: (labels, thresholds), thresholds ascending)."""
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolated_pr(tp, fp, fn)
        if self.curve == "ROC":
            x, y = _ratio(fp, tn), _ratio(tp, fn)  # false positive rate, recall
        elif self.curve == "PR":
            x, y = _ratio(tp, fn), _ratio(tp, fp)  # recall, precision
        else:  # PR gain (Flach & Kull): both gains scaled by positives / negatives
            scale = torch.where(tn + fp > 0, (tp + fn) / (tn + fp).clamp(min=1e-300), torch.zeros_like(tp))
            none = tp == 0
            safe_tp = tp.clamp(min=1e-300)
            x = torch.where(none, 0.0, 1.0 - scale * fn / safe_tp).clamp(min=0.0)  # recall gain
            y = torch.where(none, 1.0, 1.0 - scale * fp / safe_tp)  # precision gain
        # Thresholds ascend, so the curve's points run from its right end to its left.
        left, right = y[..., :-1], y[..., 1:]
        heights = {"interpolation": (left + right) / 2, "minoring": torch.minimum(left, right),
                   "majoring": torch.maximum(left, right)}[self.summation_method]
        return ((x[..., :-1] - x[..., 1:]) * heights).sum(-1)

    @staticmethod
    def _interpolated_pr(tp, fp, fn):
        """Davis & Goadrich's interpolation: between two neighbouring thresholds, the true positives
        and the predicted positives P = TP + FP vary linearly, so precision = TP / P varies as
        (a + slope * P) / P, whose integral over recall has a closed form (a log of P's ratio)."""
        positives = tp + fp
        d_tp, d_p = tp[..., :-1] - tp[..., 1:], positives[..., :-1] - positives[..., 1:]
        slope = torch.where(d_p > 0, d_tp / d_p.clamp(min=1e-300), torch.zeros_like(d_tp))
        intercept = tp[..., 1:] - slope * positives[..., 1:]
        both = (positives[..., :-1] > 0) & (positives[..., 1:] > 0)
        ratio = torch.where(both, positives[..., :-1] / positives[..., 1:].clamp(min=1e-300), torch.ones_like(d_p))
        total = (tp[..., 1:] + fn[..., 1:]).clamp(min=0)  # every positive target, at each threshold
        area = slope * (d_tp + intercept * torch.log(ratio))
        return torch.where(total > 0, area / total.clamp(min=1e-300), torch.zeros_like(area)).sum(-1)


class _AtOperatingPoint(_Confusion):
    """Keras's SensitivityAtSpecificity family: at `num_thresholds` thresholds spread evenly over
    [0, 1], the best `dependent` value among the thresholds where `constrained` >= `value`."""

    argument = reported = None  # set by _at_operating_point

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        what = type(self).argument
        if not 0 <= value <= 1:
            raise ArgumentError(f"Received: {what}={value}. Expected a number in [0, 1].")
        if num_thresholds <= 0:
            raise ArgumentError(f"Received: num_thresholds={num_thresholds}. Expected an integer > 0.")
        self.value, self.num_thresholds = float(value), num_thresholds
        super().__init__([0.5] if num_thresholds == 1 else [0.0, *_evenly_spaced(num_thresholds), 1.0], name, class_id,
                         evenly=num_thresholds > 1)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_thresholds": self.num_thresholds, type(self).argument: self.value,
                "class_id": self.class_id}

    def result(self, state, count=0):
        tp, fp, tn, fn = (state.double()[:, i] for i in range(4))
        rates = {"sensitivity": _ratio(tp, fn), "specificity": _ratio(tn, fp), "precision": _ratio(tp, fp)}
        rates["recall"] = rates["sensitivity"]
        constrained, dependent = rates[type(self).argument], rates[type(self).reported]
        return float(torch.where(constrained >= self.value, dependent, torch.zeros_like(dependent)).max().clamp(min=0))


def _at_operating_point(class_name, argument, reported):
    """A class of the family whose first argument is called `argument`, with Keras's signature
    (`argument`, num_thresholds=200, class_id=None, name=None, dtype=None)."""

    def __init__(self, *args, **kwargs):
        try:
            bound = __init__.__signature__.bind(self, *args, **kwargs)
        except TypeError as e:
            raise ArgumentError(f"{class_name}: {e}. It takes {argument} (a number in [0, 1]), num_thresholds, "
                                "class_id, name and dtype.") from None
        values = dict(bound.arguments)
        del values["self"]
        _AtOperatingPoint.__init__(self, values.pop(argument), **values)

    P = inspect.Parameter
    __init__.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P(argument, P.POSITIONAL_OR_KEYWORD)]
        + [P(n, P.POSITIONAL_OR_KEYWORD, default=d) for n, d in
           (("num_thresholds", 200), ("class_id", None), ("name", None), ("dtype", None))]
    )
    return type(class_name, (_AtOperatingPoint,), {"argument": argument, "reported": reported, "__init__": __init__})


SensitivityAtSpecificity = _at_operating_point("SensitivityAtSpecificity", "specificity", "sensitivity")
SpecificityAtSensitivity = _at_operating_point("SpecificityAtSensitivity", "sensitivity", "specificity")
PrecisionAtRecall = _at_operating_point("PrecisionAtRecall", "recall", "precision")
RecallAtPrecision = _at_operating_point("RecallAtPrecision", "precision", "recall")


class _Count(_AtThresholds):
    """One of the four confusion counts at `thresholds` (default 0.5): Keras's TruePositives,
    FalsePositives, TrueNegatives, FalseNegatives (several thresholds give a list)."""

    column = 0

    def __init__(self, thresholds=None, name=None, dtype=None):
        super().__init__(thresholds, name)

    def values_at(self, state):
        return state[:, self.column]


TruePositives = type("TruePositives", (_Count,), {"column": 0})
FalsePositives = type("FalsePositives", (_Count,), {"column": 1})
TrueNegatives = type("TrueNegatives", (_Count,), {"column": 2})
FalseNegatives = type("FalseNegatives", (_Count,), {"column": 3})
