"""Metrics from sums per class or column: F-scores, R2Score, and the IoU family's confusion matrix."""

import torch

from kcomp import losses, ops
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.metrics.base import Metric, _default_name, _unique_name, per_sample


class _ColumnSums(Metric):
    """Metrics whose state is a few sums per output column over every sample seen: `rows` gives
    the per-sample terms, each (N, C); the state is their column sums, (len(rows), C)."""

    def rows(self, y_true, y_pred) -> list:
        raise NotImplementedError

    reconcile = True  # R2Score meets (N,) targets with (N, 1) outputs as Keras's; FBetaScore does not

    def state(self, y_true, y_pred, sample_weight=None):
        if self.reconcile:
            y_true, y_pred = losses.same_rank(y_true, y_pred)
        if len(ops.shape(y_pred)) != 2 or ops.shape(y_pred)[-1] is None or len(ops.shape(y_true)) != 2:
            raise ShapeError(
                f"{self.name} takes targets and predictions of shape (batch, outputs); received "
                f"{format_shape(ops.shape(y_true))} and {format_shape(ops.shape(y_pred))}."
            )
        if ops.dtype(y_true) != "float32":
            y_true = ops.cast(y_true, "float32")
        rows = ops.concatenate([ops.reshape(r, (r.shape[0], 1, r.shape[1])) for r in self.rows(y_true, y_pred)], axis=1)
        if sample_weight is not None:
            rows = ops.multiply(rows, per_sample(sample_weight, rows))
        return ops.sum(rows, axis=0), 0


class FBetaScore(_ColumnSums):
    """Keras's FBetaScore: per class, (1 + beta^2) P R / (beta^2 P + R) from true positives, false
    positives and false negatives; a prediction is positive above `threshold`, or (None) where it
    is its row's largest. average None (per class), "micro", "macro" or "weighted"."""

    reconcile = False

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


class IoU(Metric):
    """Keras's IoU: per target class, true positives / (targets + predictions - true positives) of
    that class, over a confusion matrix added up batch by batch; the mean over `target_class_ids`
    that occurred. Class ids are the values (sparse, truncated to integers as Keras casts them)
    or each row's argmax (sparse_y_true / sparse_y_pred False)."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None,
                 sparse_y_true=True, sparse_y_pred=True, axis=-1):
        target_class_ids = list(target_class_ids)
        if max(target_class_ids) >= num_classes:
            raise ArgumentError(f"Received: target_class_ids={target_class_ids}; ids must be in [0, {num_classes}).")
        if axis != -1:
            raise ArgumentError(f"Received: axis={axis}. kcomp's IoU metrics take classes on the last axis (-1).")
        self.num_classes, self.target_class_ids, self.ignore_class = int(num_classes), target_class_ids, ignore_class
        self.sparse_y_true, self.sparse_y_pred = sparse_y_true, sparse_y_pred
        super().__init__(name or _unique_name(type(self).__name__))

    def state(self, y_true, y_pred, sample_weight=None):
        # The batch's confusion matrix (weighted for a weighted metric): the running state adds them up.
        # Keras keeps IoU counts as integers and casts the weights to them (0.7 counts 0; it warns).
        weights = [] if sample_weight is None else [ops.cast(ops.cast(sample_weight, "int32"), "float32")]
        return ops.emit("confusion_matrix", y_true, y_pred, *weights, num_classes=self.num_classes,
                        sparse_y_true=self.sparse_y_true, sparse_y_pred=self.sparse_y_pred, ignore_class=self.ignore_class), 0

    def result(self, state, count=0):
        cm = state.double()
        hits = cm.diagonal()
        union = (cm.sum(0) + cm.sum(1) - hits)[self.target_class_ids]
        hits = hits[self.target_class_ids]
        valid = union > 1e-9
        iou = torch.where(valid, hits / (union + losses.EPSILON), torch.zeros_like(hits))
        return float(iou.sum() / (valid.sum() + losses.EPSILON))


class MeanIoU(IoU):
    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, range(num_classes), name, dtype, ignore_class, sparse_y_true, sparse_y_pred, axis)


class BinaryIoU(IoU):
    """IoU of two classes with predictions >= `threshold` counted as class 1."""

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        self.threshold = float(threshold)
        super().__init__(2, target_class_ids, name, dtype)

    def state(self, y_true, y_pred, sample_weight=None):
        at_least = ops.subtract(1.0, ops.emit("greater", self.threshold, y_pred))  # y_pred >= threshold
        return super().state(y_true, at_least, sample_weight)


class OneHotIoU(IoU):
    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, target_class_ids, name, dtype, ignore_class, False, sparse_y_pred, axis)


class OneHotMeanIoU(IoU):
    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, range(num_classes), name, dtype, ignore_class, False, sparse_y_pred, axis)


