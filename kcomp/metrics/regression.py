"""Metrics that average a per-sample formula (Keras's MeanMetricWrapper): the losses' formulas,
correlations, and RootMeanSquaredError."""

import inspect
import math

from kcomp import losses, ops
from kcomp.errors import ArgumentError
from kcomp.metrics.base import Metric, _as_float_pair


class _LossMetric(Metric):
    """The mean of a loss formula's per-sample values (Keras's MeanMetricWrapper); the formula
    casts the targets and checks their shape (kcomp.losses)."""

    fn = None

    def __init__(self, name=None, dtype=None, **fn_kwargs):
        self.fn_kwargs = fn_kwargs
        super().__init__(name)

    def values(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self) -> dict:
        """Keras's config of this metric (what a .keras file's compile config holds)."""
        return {"name": self.name, "dtype": "float32", **self.fn_kwargs}


def _loss_metric(class_name, function, **defaults):
    """A class averaging `function`, with Keras's signature: (name=None, dtype=None, then each of
    `defaults` with its default), which inspect.signature (and so a file's loader) reads."""

    def __init__(self, name=None, dtype=None, **kwargs):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ArgumentError(f"{class_name} got unexpected argument(s) {sorted(unknown)}; it takes {sorted(defaults)}.")
        _LossMetric.__init__(self, name, **{**defaults, **kwargs})

    P = inspect.Parameter
    __init__.__signature__ = inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("name", P.POSITIONAL_OR_KEYWORD, default=None),
         P("dtype", P.POSITIONAL_OR_KEYWORD, default=None)]
        + [P(key, P.KEYWORD_ONLY, default=value) for key, value in defaults.items()]
    )
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


PearsonCorrelation = _loss_metric("PearsonCorrelation", _pearson_correlation, axis=-1)
ConcordanceCorrelation = _loss_metric("ConcordanceCorrelation", _concordance_correlation, axis=-1)


class RootMeanSquaredError(Metric):
    """sqrt of the mean squared difference over every value (Keras's RootMeanSquaredError)."""

    honours_mask = False  # a Mean, not a MeanMetricWrapper, in Keras: it does not read the output's mask

    def values(self, y_true, y_pred):
        y_true, y_pred = _as_float_pair(y_true, y_pred)
        return ops.square(ops.subtract(y_pred, y_true))

    def result(self, state, count):
        return math.sqrt(super().result(state, count))


