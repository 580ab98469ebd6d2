"""Metrics with Keras's names. A metric emits into the step graph what a batch adds to its
running state (`Metric.state`); the step adds that into a device tensor, and the runtime divides
only when a progress line or the epoch's logs need the number.

base.py has the Metric class; accuracy.py, regression.py (per-sample formulas), confusion.py
(counts at thresholds) and scores.py (per-class sums) the metrics; here is Keras's name table.
"""

from kcomp.errors import ArgumentError
from kcomp.metrics.accuracy import (
    Accuracy, AutoAccuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    TopKCategoricalAccuracy,
)
from kcomp.metrics.base import Metric, _default_name
from kcomp.metrics.confusion import (
    AUC, FalseNegatives, FalsePositives, Precision, PrecisionAtRecall, Recall, RecallAtPrecision,
    SensitivityAtSpecificity, SpecificityAtSensitivity, TrueNegatives, TruePositives,
)
from kcomp.metrics.regression import (
    BinaryCrossentropy, CategoricalCrossentropy, CategoricalHinge, ConcordanceCorrelation, CosineSimilarity, Hinge,
    KLDivergence, LogCoshError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError,
    MeanSquaredLogarithmicError, PearsonCorrelation, Poisson, RootMeanSquaredError, SparseCategoricalCrossentropy,
    SquaredHinge,
)
from kcomp.metrics.scores import F1Score, FBetaScore, IoU, BinaryIoU, MeanIoU, OneHotIoU, OneHotMeanIoU, R2Score

# Keras 3's metric names (keras.metrics.get): each class by its name and its snake_case name, and
# the short aliases. Keras names a metric given as a string by that string.
_CLASSES = [
    MeanSquaredError, RootMeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError,
    MeanSquaredLogarithmicError, CosineSimilarity, LogCoshError, AUC, FalseNegatives, FalsePositives,
    Precision, Recall, TrueNegatives, TruePositives, Hinge, SquaredHinge, CategoricalHinge, KLDivergence,
    Poisson, BinaryCrossentropy, CategoricalCrossentropy, SparseCategoricalCrossentropy, Accuracy,
    BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy, TopKCategoricalAccuracy,
    SparseTopKCategoricalAccuracy, F1Score, FBetaScore, R2Score, SensitivityAtSpecificity, SpecificityAtSensitivity,
    PrecisionAtRecall, RecallAtPrecision, PearsonCorrelation, ConcordanceCorrelation, IoU, MeanIoU, BinaryIoU,
    OneHotIoU, OneHotMeanIoU,
]
_BY_NAME = {}
for _cls in _CLASSES:
    _BY_NAME[_cls.__name__] = _BY_NAME[_default_name(_cls.__name__)] = _cls
for _alias, _cls in [("bce", BinaryCrossentropy), ("mse", MeanSquaredError), ("mae", MeanAbsoluteError),
                     ("mape", MeanAbsolutePercentageError), ("msle", MeanSquaredLogarithmicError)]:
    _BY_NAME[_alias] = _BY_NAME[_alias.upper()] = _cls

# Keras metrics kcomp does not compute yet: named so that asking for one says so plainly.
NOT_YET = ("Mean", "Sum")  # Keras lists them, but they average a value, not (y_true, y_pred)


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

