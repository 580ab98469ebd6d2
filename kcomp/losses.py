"""Losses with Keras's names, string aliases, formulas and defaults.

Each function takes (y_true, y_pred) and returns per-sample losses (the last
axis reduced), written with kcomp.ops, so a loss is part of the training
graph; a loss given as a Python function of kcomp.ops works the same way.
A Loss object adds `reduction` ("sum_over_batch_size" by default: the mean of
the weighted per-sample losses; "sum"; "none") and sample weights.
"""

import math

from kcomp import ops
from kcomp.errors import ArgumentError, ShapeError, format_shape

EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


# -- targets against predictions ------------------------------------------------------
def _raw_shape(x) -> tuple:
    """The shape with the IR's symbols kept (the batch "N"), so a reshape keeps them too."""
    return tuple(x.shape)


def same_rank(y_true, y_pred):
    """Keras's squeeze_or_expand_to_same_rank: when the ranks differ by one and the longer one ends
    in 1, targets (N,) meet predictions (N, 1) as (N, 1) (the rank-1 side gains the axis), and
    (N, T, 1) meets (N, T) as (N, T). Anything else is left as it is."""
    t, p = _raw_shape(y_true), _raw_shape(y_pred)
    if len(t) == len(p) + 1 and t[-1] == 1:
        if len(p) == 1:
            y_pred = ops.reshape(y_pred, (*p, 1))
        else:
            y_true = ops.reshape(y_true, t[:-1])
    elif len(p) == len(t) + 1 and p[-1] == 1:
        if len(t) == 1:
            y_true = ops.reshape(y_true, (*t, 1))
        else:
            y_pred = ops.reshape(y_pred, p[:-1])
    return y_true, y_pred


def _fits(a: tuple, b: tuple) -> bool:
    """Same rank and the same size on every axis whose size is known on both sides."""
    return len(a) == len(b) and all(x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in zip(a, b))


def _targets(y_true, y_pred, name: str, reconcile: bool):
    """The targets as a loss formula reads them: in the predictions' float dtype (Keras casts
    integer and bool labels), ranks reconciled where Keras's formula does so itself, and then of
    the predictions' shape: a loss never broadcasts (N,) against (N, 1) into an (N, N) loss."""
    if ops.dtype(y_true) != ops.dtype(y_pred):
        y_true = ops.cast(y_true, ops.dtype(y_pred))
    if reconcile:
        y_true, y_pred = same_rank(y_true, y_pred)
    if not _fits(_raw_shape(y_true), _raw_shape(y_pred)):
        raise ShapeError(
            f"{name}: targets of shape {format_shape(ops.shape(y_true))} do not match predictions of shape "
            f"{format_shape(ops.shape(y_pred))}; give targets of the model output's shape."
        )
    return y_true, y_pred


def _last_axis_mean(x):
    return ops.mean(x, axis=-1)


# -- probabilistic ------------------------------------------------------------------------
def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    y_true, y_pred = _targets(y_true, y_pred, "categorical_crossentropy", reconcile=False)
    if label_smoothing:
        classes = ops.shape(y_pred)[axis]
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), label_smoothing / classes)
    if from_logits:
        log_p = ops.log_softmax(y_pred, axis=axis)
    elif _is_last(axis, y_pred):
        # Keras's formula (rescale rows to sum 1, clip to [eps, 1 - eps], -sum(y log p)) as one
        # op, whose gradient skips the softmax that usually made y_pred (see kcomp/ir/ops/loss_ops.py).
        return ops.emit("softmax_cross_entropy", y_pred, y_true)
    else:
        # Keras rescales probabilities to sum to 1, then clips them away from 0 and 1.
        y_pred = ops.divide(y_pred, ops.sum(y_pred, axis=axis, keepdims=True))
        log_p = ops.log(ops.clip(y_pred, EPSILON, 1.0 - EPSILON))
    return ops.negative(ops.sum(ops.multiply(y_true, log_p), axis=axis))


def _is_last(axis, x) -> bool:
    rank = len(ops.shape(x))
    return rank > 0 and axis % rank == rank - 1


def _class_ids(y_true, y_pred, name: str):
    """Sparse labels as integer class ids, one per prediction row: Keras casts them to integers
    (truncating) and takes (N, 1) as (N,)."""
    if ops.dtype(y_true) not in ("int32", "int64"):
        y_true = ops.cast(y_true, "int32")
    if len(ops.shape(y_true)) == len(ops.shape(y_pred)) and ops.shape(y_true)[-1] == 1:
        y_true = ops.reshape(y_true, _raw_shape(y_true)[:-1])
    if not _fits(_raw_shape(y_true), _raw_shape(y_pred)[:-1]):
        raise ShapeError(
            f"{name}: labels of shape {format_shape(ops.shape(y_true))} do not fit predictions of shape "
            f"{format_shape(ops.shape(y_pred))}; give one class id per prediction row."
        )
    return y_true


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    classes = ops.shape(y_pred)[axis]
    y_true = _class_ids(y_true, y_pred, "sparse_categorical_crossentropy")
    if not from_logits and _is_last(axis, y_pred):
        return ops.emit("softmax_cross_entropy", y_pred, y_true)  # class ids go in as they are
    one_hot = ops.one_hot(y_true, classes, ops.dtype(y_pred))
    return categorical_crossentropy(one_hot, y_pred, from_logits=from_logits, axis=axis)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    y_true, y_pred = _targets(y_true, y_pred, "binary_crossentropy", reconcile=False)
    if label_smoothing:
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), 0.5 * label_smoothing)
    if from_logits:
        # max(x, 0) - x * y + log(1 + exp(-|x|)): stable for any logit.
        x = y_pred
        terms = ops.add(
            ops.subtract(ops.maximum(x, 0.0), ops.multiply(x, y_true)),
            ops.emit("softplus", ops.negative(ops.abs(x))),
        )
        return ops.mean(terms, axis=axis)
    # Keras's torch backend: probabilities clipped to [eps, 1 - eps], then torch's binary
    # cross-entropy -(y log p + (1 - y) log(1 - p)) (no epsilon added inside the logarithms).
    return ops.mean(_clipped_binary_crossentropy(y_true, y_pred), axis=axis)


def _clipped_binary_crossentropy(y_true, y_pred):
    """Elementwise -(y log p + (1 - y) log(1 - p)) with p clipped to [eps, 1 - eps] (Keras's torch backend)."""
    p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    pos = ops.multiply(y_true, ops.log(p))
    neg = ops.multiply(ops.subtract(1.0, y_true), ops.log(ops.subtract(1.0, p)))
    return ops.negative(ops.add(pos, neg))


def kl_divergence(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "kl_divergence", reconcile=False)
    t = ops.clip(y_true, EPSILON, 1.0)
    p = ops.clip(y_pred, EPSILON, 1.0)
    return ops.sum(ops.multiply(t, ops.log(ops.divide(t, p))), axis=-1)


def poisson(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "poisson", reconcile=False)
    return _last_axis_mean(ops.subtract(y_pred, ops.multiply(y_true, ops.log(ops.add(y_pred, EPSILON)))))


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False,
                              label_smoothing=0.0, axis=-1):
    """Binary cross-entropy times (1 - p_t) ** gamma, p_t the probability given to the true label
    (and alpha / 1 - alpha per class with apply_class_balancing), as Keras 3."""
    y_true, y_pred = _targets(y_true, y_pred, "binary_focal_crossentropy", reconcile=False)
    if label_smoothing:
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), 0.5 * label_smoothing)
    if from_logits:
        y_pred = ops.emit("sigmoid", y_pred)
    bce = _clipped_binary_crossentropy(y_true, y_pred)
    p_t = ops.add(ops.multiply(y_true, y_pred), ops.multiply(ops.subtract(1.0, y_true), ops.subtract(1.0, y_pred)))
    focal = ops.multiply(ops.power(ops.subtract(1.0, p_t), gamma), bce)
    if apply_class_balancing:
        focal = ops.multiply(ops.add(ops.multiply(y_true, alpha), ops.multiply(ops.subtract(1.0, y_true), 1.0 - alpha)), focal)
    return ops.mean(focal, axis=axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1):
    """-sum(alpha (1 - p) ** gamma y log p) over the classes, p rescaled to sum 1 and clipped (Keras 3)."""
    y_true, y_pred = _targets(y_true, y_pred, "categorical_focal_crossentropy", reconcile=False)
    if label_smoothing:
        y_true = ops.add(ops.multiply(y_true, 1.0 - label_smoothing), label_smoothing / ops.shape(y_pred)[-1])
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=axis)
    p = ops.clip(ops.divide(y_pred, ops.sum(y_pred, axis=axis, keepdims=True)), EPSILON, 1.0 - EPSILON)
    cce = ops.negative(ops.multiply(y_true, ops.log(p)))
    weight = ops.multiply(ops.power(ops.subtract(1.0, p), gamma), alpha)
    return ops.sum(ops.multiply(weight, cce), axis=axis)


def categorical_generalized_cross_entropy(y_true, y_pred, q):
    """(1 - p_y ** q) / q with p_y the probability of the integer label (Keras 3's GCE)."""
    y_true = _class_ids(y_true, y_pred, "categorical_generalized_cross_entropy")
    p = ops.sum(ops.multiply(y_pred, ops.one_hot(y_true, ops.shape(y_pred)[-1], ops.dtype(y_pred))), axis=-1)
    return ops.divide(ops.subtract(1.0, ops.power(p, q)), float(q))


def dice(y_true, y_pred, axis=None):
    """1 - 2 |y . p| / (|y| + |p|) summed over `axis` (None: the whole batch, one number, as Keras)."""
    y_true, y_pred = _targets(y_true, y_pred, "dice", reconcile=False)
    overlap = ops.sum(ops.multiply(y_true, y_pred), axis=axis)
    total = ops.add(ops.add(ops.sum(y_true, axis=axis), ops.sum(y_pred, axis=axis)), EPSILON)
    return ops.subtract(1.0, ops.divide(ops.multiply(overlap, 2.0), total))


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """1 - TP / (TP + alpha FP + beta FN) with soft counts over `axis` (None: the whole batch), as Keras."""
    y_true, y_pred = _targets(y_true, y_pred, "tversky", reconcile=False)
    overlap = ops.sum(ops.multiply(y_true, y_pred), axis=axis)
    false_pos = ops.sum(ops.multiply(ops.subtract(1.0, y_pred), y_true), axis=axis)  # Keras's names, its formula
    false_neg = ops.sum(ops.multiply(y_pred, ops.subtract(1.0, y_true)), axis=axis)
    denominator = ops.add(ops.add(ops.add(overlap, ops.multiply(false_pos, alpha)), ops.multiply(false_neg, beta)), EPSILON)
    return ops.subtract(1.0, ops.divide(overlap, denominator))


# -- regression ------------------------------------------------------------------------------
def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "mean_squared_error", reconcile=True)
    return _last_axis_mean(ops.square(ops.subtract(y_pred, y_true)))


def mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "mean_absolute_error", reconcile=True)
    return _last_axis_mean(ops.abs(ops.subtract(y_pred, y_true)))


def mean_absolute_percentage_error(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "mean_absolute_percentage_error", reconcile=True)
    ratio = ops.divide(ops.subtract(y_true, y_pred), ops.maximum(ops.abs(y_true), EPSILON))
    return ops.multiply(_last_axis_mean(ops.abs(ratio)), 100.0)


def mean_squared_logarithmic_error(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "mean_squared_logarithmic_error", reconcile=True)
    first = ops.log(ops.add(ops.maximum(y_pred, EPSILON), 1.0))
    second = ops.log(ops.add(ops.maximum(y_true, EPSILON), 1.0))
    return _last_axis_mean(ops.square(ops.subtract(first, second)))


def l2_normalize(x, axis=-1):
    """x / ||x|| along `axis` as Keras computes it: x * min(rsqrt(sum x^2), 1 / eps)."""
    inv_norm = ops.emit("rsqrt", ops.sum(ops.square(x), axis=axis, keepdims=True))
    return ops.multiply(x, ops.minimum(inv_norm, 1.0 / EPSILON))


def cosine_similarity(y_true, y_pred, axis=-1):
    """The loss: minus the cosine similarity (-1 for aligned vectors)."""
    y_true, y_pred = _targets(y_true, y_pred, "cosine_similarity", reconcile=True)
    return ops.negative(ops.sum(ops.multiply(l2_normalize(y_true, axis), l2_normalize(y_pred, axis)), axis=axis))


def huber(y_true, y_pred, delta=1.0):
    # 0.5 e^2 where |e| <= delta, delta (|e| - delta / 2) beyond: written without a branch as
    # 0.5 min(|e|, delta)^2 + delta (|e| - min(|e|, delta)).
    y_true, y_pred = _targets(y_true, y_pred, "huber", reconcile=True)
    err = ops.abs(ops.subtract(y_pred, y_true))
    quad = ops.minimum(err, float(delta))
    return _last_axis_mean(ops.add(ops.multiply(ops.square(quad), 0.5), ops.multiply(ops.subtract(err, quad), float(delta))))


def log_cosh(y_true, y_pred):
    # log(cosh(x)) = x + softplus(-2x) - log(2), stable for large |x| (Keras's formula).
    y_true, y_pred = _targets(y_true, y_pred, "log_cosh", reconcile=True)
    x = ops.subtract(y_pred, y_true)
    return _last_axis_mean(ops.subtract(ops.add(x, ops.emit("softplus", ops.multiply(x, -2.0))), math.log(2.0)))


# -- hinge ------------------------------------------------------------------------------------
def _hinge_labels(y_true):
    """Keras: when every label of the batch is 0 or 1, they become -1 and 1 (2y - 1); otherwise
    they are taken as they are. Without a branch: y + all_binary * (y - 1)."""
    binary = ops.add(ops.emit("equal", y_true, 0.0), ops.emit("equal", y_true, 1.0))  # 1 where 0 or 1
    all_binary = ops.subtract(1.0, ops.max(ops.subtract(1.0, binary)))
    return ops.add(y_true, ops.multiply(all_binary, ops.subtract(y_true, 1.0)))


def hinge(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "hinge", reconcile=False)
    margin = ops.subtract(1.0, ops.multiply(_hinge_labels(y_true), y_pred))
    return _last_axis_mean(ops.maximum(margin, 0.0))


def squared_hinge(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "squared_hinge", reconcile=False)
    margin = ops.subtract(1.0, ops.multiply(_hinge_labels(y_true), y_pred))
    return _last_axis_mean(ops.square(ops.maximum(margin, 0.0)))


def categorical_hinge(y_true, y_pred):
    y_true, y_pred = _targets(y_true, y_pred, "categorical_hinge", reconcile=False)
    pos = ops.sum(ops.multiply(y_true, y_pred), axis=-1)
    neg = ops.max(ops.multiply(ops.subtract(1.0, y_true), y_pred), axis=-1)
    return ops.maximum(ops.add(ops.subtract(neg, pos), 1.0), 0.0)


# Keras's reductions: "mean" is "sum_over_batch_size"; "mean_with_sample_weight" divides the
# weighted sum by the sum of the sample weights instead of the number of values.
REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none", None)


class Loss:
    """A loss function with its arguments, a reduction and a name (Keras's Loss objects).

    `values` gives the per-sample losses as Keras's Loss.__call__ computes them before reducing:
    integer and bool targets are cast to the predictions' float dtype. A subclass written the Keras
    way overrides `call(y_true, y_pred)`; the built-in losses are `fn` with their arguments, and
    reconcile targets of shape (N,) with predictions (N, 1) first (Keras's LossFunctionWrapper).
    """

    fn = None
    integer_targets = False  # sparse losses read class ids as they are

    def __init__(self, reduction="sum_over_batch_size", name=None, **fn_kwargs):
        if reduction not in REDUCTIONS:
            raise ArgumentError(f"Received: reduction={reduction!r}. Expected one of {list(REDUCTIONS)}.")
        self.reduction, self.name, self.fn_kwargs = reduction, name or _snake(type(self).__name__), fn_kwargs

    def call(self, y_true, y_pred):
        return type(self).fn(*same_rank(y_true, y_pred), **self.fn_kwargs)

    def reads_class_ids(self, target_shape, output_shape) -> bool:
        """Whether this loss reads targets of this shape as class ids (checked before training)."""
        return self.integer_targets

    def values(self, y_true, y_pred):
        if not self.integer_targets and ops.dtype(y_true) != ops.dtype(y_pred) and _is_float(ops.dtype(y_pred)):
            y_true = ops.cast(y_true, ops.dtype(y_pred))
        return self.call(y_true, y_pred)

    def __call__(self, y_true, y_pred, sample_weight=None):
        values = self.values(y_true, y_pred)
        if sample_weight is not None:
            values, sample_weight = same_rank(values, sample_weight)
            values = ops.multiply(values, sample_weight)
        return reduce_values(values, self.reduction, sample_weight)

    def get_config(self):
        return {"reduction": self.reduction, "name": self.name, **self.fn_kwargs}


def reduce_values(values, reduction, sample_weight=None):
    """The loss from its (weighted) values, by Keras's reductions."""
    if reduction in ("none", None):
        return values
    if reduction == "sum":
        return ops.sum(values)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        return ops.divide(ops.sum(values), ops.sum(sample_weight))
    return ops.mean(values)


def reduce_masked(values, mask, sample_weight, reduction, what: str):
    """The loss of an output that carries a mask, as Keras's Loss applies it (losses/loss.py,
    apply_mask): the values of masked steps weigh 0; a mean reduction divides by the number of
    unmasked steps (0 when there are none), "sum" sums, "mean_with_sample_weight" divides by the
    weights' sum. `values` holds one value per sample and step, as the mask does."""
    if tuple(values.shape) != tuple(mask.shape):
        raise ShapeError(
            f"{what} gave values of shape {format_shape(ops.shape(values))} but the output's mask has shape "
            f"{format_shape(ops.shape(mask))}: a masked output's loss needs one value per unmasked step, as in Keras."
        )
    if ops.dtype(mask) != ops.dtype(values):
        mask = ops.cast(mask, ops.dtype(values))
    per_sample = ops.reshape(sample_weight, (sample_weight.shape[0],) + (1,) * (len(mask.shape) - 1))
    weights = ops.multiply(mask, per_sample if ops.dtype(per_sample) == ops.dtype(mask) else ops.cast(per_sample, ops.dtype(mask)))
    total = ops.sum(ops.multiply(values, weights))
    if reduction == "sum":
        return total
    counted = weights if reduction == "mean_with_sample_weight" else mask
    # Keras's divide_no_nan: with no unmasked step the total is 0 and so is the loss.
    return ops.divide(total, ops.maximum(ops.sum(counted), 1e-30 if reduction == "mean_with_sample_weight" else 1.0))


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _snake(name):
    from kcomp.session import to_snake_case

    return to_snake_case(name)


def _loss_class(class_name, function, integer_targets=False, **defaults):
    def __init__(self, reduction="sum_over_batch_size", name=None, **kwargs):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ArgumentError(f"{class_name} got unexpected argument(s) {sorted(unknown)}; it takes {sorted(defaults)}.")
        Loss.__init__(self, reduction, name or function.__name__, **{**defaults, **kwargs})

    attrs = {"fn": staticmethod(function), "__init__": __init__, "__doc__": function.__doc__, "integer_targets": integer_targets}
    return type(class_name, (Loss,), attrs)


CategoricalCrossentropy = _loss_class("CategoricalCrossentropy", categorical_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1)
SparseCategoricalCrossentropy = _loss_class(
    "SparseCategoricalCrossentropy", sparse_categorical_crossentropy, integer_targets=True, from_logits=False, axis=-1
)
BinaryCrossentropy = _loss_class("BinaryCrossentropy", binary_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1)
KLDivergence = _loss_class("KLDivergence", kl_divergence)
Poisson = _loss_class("Poisson", poisson)
MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error)
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error)
MeanAbsolutePercentageError = _loss_class("MeanAbsolutePercentageError", mean_absolute_percentage_error)
MeanSquaredLogarithmicError = _loss_class("MeanSquaredLogarithmicError", mean_squared_logarithmic_error)
CosineSimilarity = _loss_class("CosineSimilarity", cosine_similarity, axis=-1)
Huber = _loss_class("Huber", huber, delta=1.0)
LogCosh = _loss_class("LogCosh", log_cosh)
Hinge = _loss_class("Hinge", hinge)
SquaredHinge = _loss_class("SquaredHinge", squared_hinge)
CategoricalHinge = _loss_class("CategoricalHinge", categorical_hinge)
BinaryFocalCrossentropy = _loss_class(
    "BinaryFocalCrossentropy", binary_focal_crossentropy, apply_class_balancing=False, alpha=0.25, gamma=2.0,
    from_logits=False, label_smoothing=0.0, axis=-1,
)
CategoricalFocalCrossentropy = _loss_class(
    "CategoricalFocalCrossentropy", categorical_focal_crossentropy, alpha=0.25, gamma=2.0, from_logits=False,
    label_smoothing=0.0, axis=-1,
)
CategoricalGeneralizedCrossEntropy = _loss_class(
    "CategoricalGeneralizedCrossEntropy", categorical_generalized_cross_entropy, integer_targets=True, q=0.5
)
Dice = _loss_class("Dice", dice, axis=None)
Tversky = _loss_class("Tversky", tversky, alpha=0.5, beta=0.5, axis=None)

# Keras 3's names (keras.losses.get): every class and function name, and its short aliases.
_CLASSES = [
    CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy, KLDivergence, Poisson,
    MeanSquaredError, MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
    CosineSimilarity, Huber, LogCosh, Hinge, SquaredHinge, CategoricalHinge, BinaryFocalCrossentropy,
    CategoricalFocalCrossentropy, CategoricalGeneralizedCrossEntropy, Dice, Tversky,
]
_BY_NAME = {cls.__name__: cls for cls in _CLASSES}
_BY_NAME.update({cls.fn.__name__: cls for cls in _CLASSES})
for _alias, _cls in [("bce", BinaryCrossentropy), ("kld", KLDivergence), ("mae", MeanAbsoluteError),
                     ("mse", MeanSquaredError), ("mape", MeanAbsolutePercentageError), ("msle", MeanSquaredLogarithmicError)]:
    _BY_NAME[_alias] = _BY_NAME[_alias.upper()] = _cls


# Keras losses kcomp does not compute yet (CTC's alignment recursion, Circle's pairwise similarities).
NOT_YET = ("CTC", "ctc", "Circle", "circle")


class _FunctionLoss(Loss):
    """A user's loss function (y_true, y_pred) -> per-sample losses, written with kcomp.ops; as
    Keras wraps it, targets and predictions meet at the same rank first."""

    def __init__(self, fn, name=None):
        super().__init__(name=name or getattr(fn, "__name__", "custom_loss"))
        self.user_fn = fn

    def call(self, y_true, y_pred):
        return self.user_fn(*same_rank(y_true, y_pred))


class AutoCrossentropy(Loss):
    """loss="crossentropy" (or "ce"): Keras picks binary, sparse or categorical cross-entropy from
    the shapes of the targets and predictions when it first sees them."""

    def values(self, y_true, y_pred):
        return self._chosen(ops.shape(y_true), ops.shape(y_pred)).values(y_true, y_pred)

    def reads_class_ids(self, target_shape, output_shape) -> bool:
        return self._chosen(target_shape, output_shape).integer_targets

    @staticmethod
    def _chosen(t, p) -> Loss:
        if p[-1] == 1:
            return BinaryCrossentropy()
        if len(t) < len(p) or t[-1] == 1:
            return SparseCategoricalCrossentropy()
        return CategoricalCrossentropy()


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        if identifier.lower() in ("crossentropy", "ce"):
            return AutoCrossentropy(name=identifier)
        cls = _BY_NAME.get(identifier)
        if identifier in NOT_YET:
            raise ArgumentError(f"Received: loss={identifier!r}: a Keras loss kcomp does not compute yet. "
                                "Write it as a function of (y_true, y_pred) with kcomp.ops, or pick another loss.")
        if cls is None:
            from difflib import get_close_matches

            near = get_close_matches(identifier, list(_BY_NAME), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ArgumentError(f"Received: loss={identifier!r}, which kcomp does not know.{hint}")
        return cls(name=identifier)
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if callable(identifier):
        return _FunctionLoss(identifier)
    raise ArgumentError(f"Received: loss={identifier!r}. Expected a name such as 'mse', a Loss, or a function.")
