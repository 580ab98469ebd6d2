"""Metrics with Keras's names. A metric emits per-sample values into the step
graph and what a batch adds to its running state (`batch_state`); the step
adds that into a device tensor, and the runtime divides only when a progress
line or the epoch's logs need the number.
"""

import math

import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError, ShapeError, format_shape


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


def _unique_name(cls_name):
    from kcomp.backend import unique_name

    return unique_name(_default_name(cls_name))


def _default_name(cls_name):
    from kcomp.backend import to_snake_case

    return to_snake_case(cls_name)


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


class _LossMetric(Metric):
    """The mean of a loss formula's per-sample values (Keras's MeanMetricWrapper); the formula
    casts the targets and checks their shape (kcomp.losses)."""

    fn = None

    def __init__(self, name=None, dtype=None, **fn_kwargs):
        self.fn_kwargs = fn_kwargs
        super().__init__(name)

    def values(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self.fn_kwargs)


def _loss_metric(class_name, function, **defaults):
    def __init__(self, name=None, dtype=None, **kwargs):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ArgumentError(f"{class_name} got unexpected argument(s) {sorted(unknown)}; it takes {sorted(defaults)}.")
        _LossMetric.__init__(self, name, **{**defaults, **kwargs})

    return type(class_name, (_LossMetric,), {"fn": staticmethod(function), "__init__": __init__})


def _cosine_similarity(y_true, y_pred, axis=-1):
    """The metric is the similarity itself (the loss is its negative)."""
    return ops.negative(losses.cosine_similarity(y_true, y_pred, axis))


MeanSquaredError = _loss_metric("MeanSquaredError", losses.mean_squared_error)
MeanAbsoluteError = _loss_metric("MeanAbsoluteError", losses.mean_absolute_error)
MeanAbsolutePercentageError = _loss_metric("MeanAbsolutePercentageError", losses.mean_absolute_percentage_error)
MeanSquaredLogarithmicError = _loss_metric("MeanSquaredLogarithmicError", losses.mean_squared_logarithmic_error)
CosineSimilarity = _loss_metric("CosineSimilarity", _cosine_similarity, axis=-1)
LogCoshError = _loss_metric("LogCoshError", losses.log_cosh)
Poisson = _loss_metric("Poisson", losses.poisson)
KLDivergence = _loss_metric("KLDivergence", losses.kl_divergence)
Hinge = _loss_metric("Hinge", losses.hinge)
SquaredHinge = _loss_metric("SquaredHinge", losses.squared_hinge)
CategoricalHinge = _loss_metric("CategoricalHinge", losses.categorical_hinge)
BinaryCrossentropy = _loss_metric("BinaryCrossentropy", losses.binary_crossentropy, from_logits=False, label_smoothing=0.0)
CategoricalCrossentropy = _loss_metric(
    "CategoricalCrossentropy", losses.categorical_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1
)
SparseCategoricalCrossentropy = _loss_metric(
    "SparseCategoricalCrossentropy", losses.sparse_categorical_crossentropy, from_logits=False, axis=-1
)


def _centered(x, axis):
    return ops.subtract(x, ops.mean(x, axis=axis, keepdims=True))


def _variance(x, axis):
    """Population variance (divides by the count), as Keras's ops.var."""
    return ops.mean(ops.square(_centered(x, axis)), axis=axis, keepdims=True)


def _pearson_correlation(y_true, y_pred, axis=-1):
    y_true, y_pred = _as_float_pair(y_true, y_pred)
    t, p = _centered(y_true, axis), _centered(y_pred, axis)
    t = ops.divide(t, ops.sqrt(_variance(t, axis)))
    p = ops.divide(p, ops.sqrt(_variance(p, axis)))
    return ops.mean(ops.multiply(t, p), axis=axis)


def _concordance_correlation(y_true, y_pred, axis=-1):
    # Keras's formula term by term (its covariance centres both factors on the predictions' mean).
    y_true, y_pred = _as_float_pair(y_true, y_pred)
    mean_t, mean_p = ops.mean(y_true, axis=axis, keepdims=True), ops.mean(y_pred, axis=axis, keepdims=True)
    covariance = ops.multiply(ops.subtract(y_true, mean_p), ops.subtract(y_pred, mean_p))
    norm = ops.add(ops.add(_variance(y_true, axis), _variance(y_pred, axis)), ops.square(ops.subtract(mean_t, mean_p)))
    return ops.mean(ops.divide(ops.multiply(covariance, 2.0), ops.add(norm, losses.EPSILON)), axis=axis)


def _as_float_pair(y_true, y_pred):
    y_true, y_pred = losses.same_rank(y_true, y_pred)
    if ops.dtype(y_true) != ops.dtype(y_pred):
        y_true = ops.cast(y_true, ops.dtype(y_pred))
    return y_true, y_pred


PearsonCorrelation = _loss_metric("PearsonCorrelation", _pearson_correlation, axis=-1)
ConcordanceCorrelation = _loss_metric("ConcordanceCorrelation", _concordance_correlation, axis=-1)


class RootMeanSquaredError(Metric):
    """sqrt of the mean squared difference over every value (Keras's RootMeanSquaredError)."""

    def values(self, y_true, y_pred):
        y_true, y_pred = _as_float_pair(y_true, y_pred)
        return ops.square(ops.subtract(y_pred, y_true))

    def result(self, state, count):
        return math.sqrt(super().result(state, count))


class _Confusion(Metric):
    """Metrics from true/false positive/negative counts at thresholds (Keras's confusion metrics)."""

    def __init__(self, thresholds, name=None):
        self.thresholds = tuple(float(t) for t in thresholds)
        # Keras names these automatically and uniquely per session: auc, auc_1, ...
        super().__init__(name or _unique_name(type(self).__name__))

    def values(self, y_true, y_pred):
        y_true, y_pred = losses.same_rank(y_true, y_pred)  # as Keras's confusion-matrix update
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


class _ColumnSums(Metric):
    """Metrics whose state is a few sums per output column over every sample seen: `rows` gives
    the per-sample terms, each (N, C); the state is their column sums, (len(rows), C)."""

    def rows(self, y_true, y_pred) -> list:
        raise NotImplementedError

    def values(self, y_true, y_pred):
        y_true, y_pred = losses.same_rank(y_true, y_pred)
        if len(ops.shape(y_pred)) != 2 or ops.shape(y_pred)[-1] is None:
            raise ShapeError(f"{self.name} takes predictions of shape (batch, outputs); received {format_shape(ops.shape(y_pred))}.")
        if ops.dtype(y_true) != "float32":
            y_true = ops.cast(y_true, "float32")
        rows = [ops.reshape(r, (r.shape[0], 1, r.shape[1])) for r in self.rows(y_true, y_pred)]
        return ops.concatenate(rows, axis=1)

    def batch_state(self, values):
        return ops.sum(values, axis=0), 0


class FBetaScore(_ColumnSums):
    """Keras's FBetaScore: per class, (1 + beta^2) P R / (beta^2 P + R) from true positives, false
    positives and false negatives; a prediction is positive above `threshold`, or (None) where it
    is its row's largest. average None (per class), "micro", "macro" or "weighted"."""

    def __init__(self, average=None, beta=1.0, threshold=None, name=None, dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ArgumentError(f"Received: average={average!r}. Expected None, 'micro', 'macro' or 'weighted'.")
        if not isinstance(beta, float) or beta <= 0:
            raise ArgumentError(f"Received: beta={beta!r}. Expected a float > 0.")
        if threshold is not None and not (isinstance(threshold, float) and 0 < threshold <= 1):
            raise ArgumentError(f"Received: threshold={threshold!r}. Expected None or a float in (0, 1].")
        self.average, self.beta, self.threshold = average, beta, threshold
        super().__init__(name or _default_name(type(self).__name__).replace("f_beta", "fbeta"))

    def rows(self, y_true, y_pred):
        if self.threshold is None:  # the row's largest (and not 0) is the predicted class
            top = ops.emit("equal", y_pred, ops.max(y_pred, axis=-1, keepdims=True))
            picked = ops.multiply(top, ops.emit("greater", ops.abs(y_pred), 1e-9))
        else:
            picked = ops.emit("greater", y_pred, self.threshold)
        missed = ops.subtract(1.0, picked)
        return [ops.multiply(picked, y_true), ops.multiply(picked, ops.subtract(1.0, y_true)), ops.multiply(missed, y_true), y_true]

    def result(self, state, count=0):
        tp, fp, fn, support = state.double()
        if self.average == "micro":
            tp, fp, fn, support = tp.sum(), fp.sum(), fn.sum(), support.sum()
        eps = losses.EPSILON
        precision, recall = tp / (tp + fp + eps), tp / (tp + fn + eps)
        score = precision * recall / (self.beta**2 * precision + recall + eps) * (1 + self.beta**2)
        if self.average == "weighted":
            score = (score * support / (support.sum() + eps)).sum()
        elif self.average == "macro":
            score = score.mean()
        return score.numpy().astype("float32") if score.dim() else float(score)


class F1Score(FBetaScore):
    def __init__(self, average=None, threshold=None, name=None, dtype=None):
        super().__init__(average, 1.0, threshold, name or "f1_score", dtype)


class R2Score(_ColumnSums):
    """Keras's R2Score: per output column 1 - SS_res / SS_tot, averaged uniformly ("uniform_average"),
    by variance ("variance_weighted_average") or not (None); adjusted for `num_regressors`."""

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ArgumentError(f"Received: class_aggregation={class_aggregation!r}. Expected None, 'uniform_average' or 'variance_weighted_average'.")
        if num_regressors < 0:
            raise ArgumentError(f"Received: num_regressors={num_regressors}. Expected a number >= 0.")
        self.class_aggregation, self.num_regressors = class_aggregation, num_regressors
        super().__init__(name)

    def rows(self, y_true, y_pred):
        ones = ops.add(ops.multiply(y_true, 0.0), 1.0)
        return [y_true, ops.square(y_true), ops.square(ops.subtract(y_true, y_pred)), ones]

    def result(self, state, count=0):
        total_y, total_y2, residual, counts = state.double()
        variation = total_y2 - total_y * (total_y / counts)
        scores = 1 - residual / variation
        scores = torch.where(torch.isinf(scores), torch.zeros_like(scores), scores)
        if self.class_aggregation == "uniform_average":
            score = scores.mean()
        elif self.class_aggregation == "variance_weighted_average":
            score = (variation * scores).sum() / variation.sum()
        else:
            return scores.numpy().astype("float32")
        samples = float(counts.sum())
        if 0 < self.num_regressors < samples - 1:  # Keras falls back to the plain score otherwise
            score = 1 - (1 - score) * (samples - 1) / (samples - self.num_regressors - 1)
        return float(score)


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

# Keras 3's metric names (keras.metrics.get): each class by its name and its snake_case name, and
# the short aliases. Keras names a metric given as a string by that string.
_CLASSES = [
    MeanSquaredError, RootMeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError, CosineSimilarity, LogCoshError, AUC, FalseNegatives, FalsePositives,
    Precision, Recall, TrueNegatives, TruePositives, Hinge, SquaredHinge, CategoricalHinge, KLDivergence,
    Poisson, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, Accuracy,
    BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy, F1Score, FBetaScore, R2Score, SensitivityAtSpecificity, SpecificityAtSensitivity,
    PrecisionAtRecall, RecallAtPrecision, PearsonCorrelation, ConcordanceCorrelation,
]
_BY_NAME = {}
for _cls in _CLASSES:
    _BY_NAME[_cls.__name__] = _BY_NAME[_default_name(_cls.__name__)] = _cls
for _alias, _cls in [("bce", BinaryCrossentropy), ("mse", MeanSquaredError), ("mae", MeanAbsoluteError),
                     ("mape", MeanAbsolutePercentageError), ("msle", MeanSquaredLogarithmicError)]:
    _BY_NAME[_alias] = _BY_NAME[_alias.upper()] = _cls

# Keras metrics kcomp does not compute yet: named so that asking for one says so plainly.
NOT_YET = (
    "IoU", "BinaryIoU", "MeanIoU",
    "OneHotIoU", "OneHotMeanIoU", "Mean", "Sum",
)


def get(identifier) -> Metric:
    """A metric from a Metric, a Metric class, a name Keras accepts, or a function of
    (y_true, y_pred) written with kcomp.ops (averaged over every value, as Keras wraps one)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return AutoAccuracy(name=identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier](name=identifier)
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier) and not isinstance(identifier, type):
        return _FunctionMetric(identifier)
    if isinstance(identifier, str) and identifier in {n for c in NOT_YET for n in (c, _default_name(c))}:
        raise ArgumentError(f"Received: metric={identifier!r}: a Keras metric kcomp does not compute yet. Remove it or compute it after predict.")
    from difflib import get_close_matches

    near = get_close_matches(str(identifier), [*_BY_NAME, "accuracy"], n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ArgumentError(f"Received: metric={identifier!r}, which kcomp does not know.{hint}")


class _FunctionMetric(Metric):
    def __init__(self, fn):
        super().__init__(getattr(fn, "__name__", "metric"))
        self.fn = fn

    def values(self, y_true, y_pred):
        return self.fn(y_true, y_pred)
