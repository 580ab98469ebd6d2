"""The Metric base: per-batch values emitted into the step graph, a running state, a result.

A metric emits into the step graph what a batch adds to its running state (`state`); the step
adds that into a device tensor, and the runtime divides only when a progress line or the epoch's
logs need the number. A weighted metric (compile's weighted_metrics) weighs each sample by its
sample weight (class weights included), as Keras's weighted metrics do.
"""

import copy
import inspect
import math

import torch

from kcomp import losses, ops
from kcomp.errors import ShapeError, format_shape


class Metric:
    """The mean of per-sample values, accumulated over batches.

    A metric is stateless: the training loop keeps a state per run (training, validation) and
    the step adds each batch's `state` into it.
    """

    weighted = False  # True for a metric of compile(weighted_metrics=...): see `weighted_copy`
    # Keras's MeanMetricWrapper: an output's mask weighs its values (masked_state). A metric with a state
    # of its own (counts at thresholds, sums per class) does not read masks, as Keras's do not.
    honours_mask = True

    def reads_mask(self) -> bool:
        return self.honours_mask and type(self).state is Metric.state

    def __init__(self, name=None):
        self.name = name or _default_name(type(self).__name__)

    def values(self, y_true, y_pred):
        """The per-sample values, as graph ops on the targets and predictions."""
        raise NotImplementedError

    def state(self, y_true, y_pred, sample_weight=None):
        """Graph ops: what one batch adds to the running state, and how many values each sample
        contributes (the mean's divisor grows by that per sample; 0 when the state holds its own
        divisor). Unweighted: the values' sum. Weighted: [sum(values * weight), sum(weight)]."""
        values = self.values(y_true, y_pred)
        if any(not isinstance(d, int) for d in values.shape[1:]):  # e.g. (N,) targets against (N, 1) broadcast
            raise ShapeError(
                f"metric {self.name} gave values of shape {format_shape(ops.shape(values))} from targets of shape "
                f"{format_shape(ops.shape(y_true))} and predictions of shape {format_shape(ops.shape(y_pred))}: a table "
                "across samples, not values per sample. Give targets of the predictions' shape."
            )
        if values.dtype != "float32":
            values = ops.cast(values, "float32")
        if sample_weight is None:
            return ops.sum(values), math.prod(values.shape[1:])
        weights = ops.emit("broadcast_like", per_sample(sample_weight, values), values)
        totals = [ops.reshape(ops.sum(v), (1,)) for v in (ops.multiply(values, weights), weights)]
        return ops.concatenate(totals, axis=0), 0

    def masked_state(self, y_true, y_pred, mask, sample_weight=None):
        """`state` for an output carrying a mask, as Keras's MeanMetricWrapper takes one: the values of
        masked steps weigh 0, the mean is over the others ([sum(values * weight), sum(weight)])."""
        values = self.values(y_true, y_pred)
        if tuple(values.shape) != tuple(mask.shape):
            raise ShapeError(
                f"metric {self.name} gave values of shape {format_shape(ops.shape(values))} but the output's mask has "
                f"shape {format_shape(ops.shape(mask))}; a masked output's metric needs one value per step, as in Keras."
            )
        if values.dtype != "float32":
            values = ops.cast(values, "float32")
        weights = mask if ops.dtype(mask) == "float32" else ops.cast(mask, "float32")
        if sample_weight is not None:
            weights = ops.multiply(weights, per_sample(sample_weight, weights))
        totals = [ops.reshape(ops.sum(v), (1,)) for v in (ops.multiply(values, weights), weights)]
        return ops.concatenate(totals, axis=0), 0

    def result(self, state: torch.Tensor, count: int) -> float:
        """The metric from its running state and the number of values added into it."""
        if self.weighted:
            total, weight = state.tolist()
            return total / weight if weight else 0.0
        return float(state) / count if count else 0.0

    def get_config(self) -> dict:
        """Keras's config of this metric (what a .keras file's compile config holds): its name, dtype
        and the arguments of its constructor, read back from the attributes of the same names (an
        argument kcomp keeps no attribute for, such as IoU's axis, is written at its default)."""
        config = {"name": self.name, "dtype": "float32"}
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "name", "dtype") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            value = getattr(self, name, param.default)
            config[name] = list(value) if isinstance(value, (tuple, range)) else value
        return config

    def weighted_copy(self, name: str) -> "Metric":
        """This metric weighing samples by their sample weights, under `name`."""
        twin = copy.copy(self)
        twin.weighted, twin.name = True, name
        return twin


def per_sample(sample_weight, values):
    """Per-sample weights (N,) shaped to multiply values (N, ...): trailing axes of size 1."""
    if len(values.shape) > 1:
        return ops.reshape(sample_weight, (sample_weight.shape[0],) + (1,) * (len(values.shape) - 1))
    return sample_weight


def _unique_name(cls_name):
    from kcomp.session import unique_name

    return unique_name(_default_name(cls_name))


def _default_name(cls_name):
    from kcomp.session import to_snake_case

    return to_snake_case(cls_name)


def _as_float_pair(y_true, y_pred):
    y_true, y_pred = losses.same_rank(y_true, y_pred)
    if ops.dtype(y_true) != ops.dtype(y_pred):
        y_true = ops.cast(y_true, ops.dtype(y_pred))
    return y_true, y_pred


# Keras's direction of each metric class (its `_direction`): which way is better. Metrics that
# average a loss go down; the others that Keras marks go up. A class not listed (a user's metric
# function) has no known direction, and a callback watching it in mode "auto" must be told.
_GOES_UP = {
    "Accuracy", "AutoAccuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
    "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "AUC", "Precision", "Recall", "TruePositives",
    "TrueNegatives", "PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity", "SpecificityAtSensitivity",
    "F1Score", "FBetaScore", "R2Score", "IoU", "MeanIoU", "BinaryIoU", "OneHotIoU", "OneHotMeanIoU",
    "CosineSimilarity", "PearsonCorrelation", "ConcordanceCorrelation",
}
_GOES_DOWN = {
    "FalsePositives", "FalseNegatives", "MeanSquaredError", "RootMeanSquaredError", "MeanAbsoluteError",
    "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "LogCoshError", "Poisson", "KLDivergence", "Hinge",
    "SquaredHinge", "CategoricalHinge", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
}


def goes_up(metric: Metric) -> bool | None:
    """True if a larger value is better, False if a smaller one is, None if Keras would not know."""
    for cls in type(metric).__mro__:
        if cls.__name__ in _GOES_UP:
            return True
        if cls.__name__ in _GOES_DOWN:
            return False
    return None
