"""Losses with Keras's names, string aliases, formulas and defaults.

Each function takes (y_true, y_pred) and returns per-sample losses (the last
axis reduced), written with kcomp.ops, so a loss is part of the training
graph; a loss given as a Python function of kcomp.ops works the same way.
A Loss object adds `reduction` ("sum_over_batch_size" by default: the mean of
the weighted per-sample losses; "sum"; "none") and sample weights.
"""

from kcomp import ops
from kcomp.errors import ArgumentError

EPSILON = 1e-7  # Keras's backend epsilon: probabilities are clipped to [eps, 1 - eps]


def _last_axis_mean(x):
    return ops.mean(x, axis=-1)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
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


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    classes = ops.shape(y_pred)[axis]
    if ops.dtype(y_true) not in ("int32", "int64"):
        y_true = ops.cast(y_true, "int32")
    if len(ops.shape(y_true)) == len(ops.shape(y_pred)):  # (N, 1) labels, as Keras accepts
        y_true = ops.reshape(y_true, tuple(y_true.shape[:-1]))  # raw shape: keeps the batch symbol
    if not from_logits and _is_last(axis, y_pred):
        return ops.emit("softmax_cross_entropy", y_pred, y_true)  # class ids go in as they are
    one_hot = ops.one_hot(y_true, classes, ops.dtype(y_pred))
    return categorical_crossentropy(one_hot, y_pred, from_logits=from_logits, axis=axis)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
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
    p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    pos = ops.multiply(y_true, ops.log(ops.add(p, EPSILON)))
    neg = ops.multiply(ops.subtract(1.0, y_true), ops.log(ops.add(ops.subtract(1.0, p), EPSILON)))
    return ops.negative(ops.mean(ops.add(pos, neg), axis=axis))


def mean_squared_error(y_true, y_pred):
    return _last_axis_mean(ops.square(ops.subtract(y_pred, y_true)))


def mean_absolute_error(y_true, y_pred):
    return _last_axis_mean(ops.abs(ops.subtract(y_pred, y_true)))


def huber(y_true, y_pred, delta=1.0):
    # 0.5 e^2 where |e| <= delta, delta (|e| - delta / 2) beyond: written without a branch as
    # 0.5 min(|e|, delta)^2 + delta (|e| - min(|e|, delta)).
    err = ops.abs(ops.subtract(y_pred, y_true))
    quad = ops.minimum(err, float(delta))
    return _last_axis_mean(ops.add(ops.multiply(ops.square(quad), 0.5), ops.multiply(ops.subtract(err, quad), float(delta))))


def kl_divergence(y_true, y_pred):
    t = ops.clip(y_true, EPSILON, 1.0)
    p = ops.clip(y_pred, EPSILON, 1.0)
    return ops.sum(ops.multiply(t, ops.log(ops.divide(t, p))), axis=-1)


def hinge(y_true, y_pred):
    # Keras turns {0, 1} labels into {-1, 1}: y + |y| - 1 does so and keeps -1 as -1.
    y = ops.subtract(ops.add(y_true, ops.abs(y_true)), 1.0)
    return _last_axis_mean(ops.maximum(ops.subtract(1.0, ops.multiply(y, y_pred)), 0.0))


REDUCTIONS = ("sum_over_batch_size", "sum", "none", None)


class Loss:
    """A loss function with its arguments, a reduction and a name (Keras's Loss objects)."""

    fn = None

    def __init__(self, reduction="sum_over_batch_size", name=None, **fn_kwargs):
        if reduction not in REDUCTIONS:
            raise ArgumentError(f"Received: reduction={reduction!r}. Expected one of {list(REDUCTIONS)}.")
        self.reduction, self.name, self.fn_kwargs = reduction, name or _snake(type(self).__name__), fn_kwargs

    def call(self, y_true, y_pred):
        return type(self).fn(y_true, y_pred, **self.fn_kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        values = self.call(y_true, y_pred)
        if sample_weight is not None:
            values = ops.multiply(values, sample_weight)
        if self.reduction == "sum_over_batch_size":
            return ops.mean(values)
        if self.reduction == "sum":
            return ops.sum(values)
        return values

    def get_config(self):
        return {"reduction": self.reduction, "name": self.name, **self.fn_kwargs}


def _snake(name):
    from kcomp.backend import to_snake_case

    return to_snake_case(name)


def _loss_class(class_name, function, **defaults):
    def __init__(self, reduction="sum_over_batch_size", name=None, **kwargs):
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise ArgumentError(f"{class_name} got unexpected argument(s) {sorted(unknown)}; it takes {sorted(defaults)}.")
        Loss.__init__(self, reduction, name or function.__name__, **{**defaults, **kwargs})

    return type(class_name, (Loss,), {"fn": staticmethod(function), "__init__": __init__, "__doc__": function.__doc__})


CategoricalCrossentropy = _loss_class("CategoricalCrossentropy", categorical_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1)
SparseCategoricalCrossentropy = _loss_class("SparseCategoricalCrossentropy", sparse_categorical_crossentropy, from_logits=False, axis=-1)
BinaryCrossentropy = _loss_class("BinaryCrossentropy", binary_crossentropy, from_logits=False, label_smoothing=0.0, axis=-1)
MeanSquaredError = _loss_class("MeanSquaredError", mean_squared_error)
MeanAbsoluteError = _loss_class("MeanAbsoluteError", mean_absolute_error)
Huber = _loss_class("Huber", huber, delta=1.0)
KLDivergence = _loss_class("KLDivergence", kl_divergence)
Hinge = _loss_class("Hinge", hinge)

_BY_NAME = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "kullback_leibler_divergence": KLDivergence,
    "hinge": Hinge,
}


class _FunctionLoss(Loss):
    """A user's loss function (y_true, y_pred) -> per-sample losses, written with kcomp.ops."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "custom_loss"))
        self.user_fn = fn

    def call(self, y_true, y_pred):
        return self.user_fn(y_true, y_pred)


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier)
        if cls is None:
            from difflib import get_close_matches

            near = get_close_matches(identifier, list(_BY_NAME), n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ArgumentError(f"Received: loss={identifier!r}, which kcomp does not know.{hint}")
        return cls()
    if callable(identifier):
        return _FunctionLoss(identifier)
    raise ArgumentError(f"Received: loss={identifier!r}. Expected a name such as 'mse', a Loss, or a function.")
