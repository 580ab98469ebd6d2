"""correct: 1.0 where a prediction is right, else 0.0 (the accuracy metrics' per-sample values)."""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import NUMBER
from kcomp.ir.types import TensorSpec

KINDS = ("categorical", "sparse_categorical", "binary", "top_k", "sparse_top_k")


def _infer(inputs, kind, threshold, k):
    y_true, y_pred = inputs
    if kind == "binary":
        if y_true.rank != y_pred.rank:
            raise ShapeError(f"binary accuracy: targets {format_shape(y_true.shape)} and predictions {format_shape(y_pred.shape)} differ in rank.")
        return [TensorSpec(y_pred.shape, "float32")]
    return [TensorSpec(y_pred.shape[:-1], "float32")]


def _labels(y_true, y_pred):
    """Sparse labels (N,) or (N, 1) -> (N,) int64."""
    if y_true.dim() == y_pred.dim():
        y_true = y_true.squeeze(-1)
    return y_true.long()


def _correct(y_true, y_pred, kind, threshold, k):
    if kind == "binary":
        hit = (y_pred > threshold).to(y_true.dtype) == y_true
    elif kind == "categorical":
        hit = y_pred.argmax(-1) == y_true.argmax(-1)
    elif kind == "sparse_categorical":
        hit = y_pred.argmax(-1) == _labels(y_true, y_pred)
    else:
        # Keras's in_top_k: a hit when the label's score is at least the k-th highest score, so a
        # label tied with the k-th counts (torch.topk's indices would pick among ties by position).
        labels = y_true.argmax(-1) if kind == "top_k" else _labels(y_true, y_pred)
        inside = (labels >= 0) & (labels < y_pred.shape[-1])
        score = y_pred.gather(-1, labels.clamp(0, y_pred.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
        kth = torch.topk(y_pred, min(k, y_pred.shape[-1]), dim=-1).values[..., -1]
        hit = inside & (score >= kth)
    return hit.to(torch.float32)


OPS = [
    OpDef(
        name="correct",
        doc="1.0 where the prediction is right: argmax match (categorical, sparse), y_pred > threshold "
        "matching y_true (binary), or the label's score at least the k-th highest (top_k, ties count as Keras's).",
        num_inputs=(2, 2),
        attrs={"kind": attr(str, choices=KINDS), "threshold": attr(NUMBER, 0.5), "k": attr(int, 5)},
        infer=_infer,
        reference=_correct,
        traits={"reduction"},
    ),
]


def _check_sample_weight(inputs, what):
    """An optional third input: one weight per sample, (N,)."""
    if len(inputs) == 3 and (inputs[2].rank != 1 or inputs[2].shape[0] != inputs[1].shape[0]):
        raise ShapeError(f"{what}: sample weights {format_shape(inputs[2].shape)} should be one per sample of "
                         f"predictions {format_shape(inputs[1].shape)}.")


def _weights_like(weights, shape, dims_before=0) -> torch.Tensor:
    """Per-sample weights (N,) expanded over `shape` (N, ...), with `dims_before` leading axes of 1."""
    w = weights.float().reshape((1,) * dims_before + (-1,) + (1,) * (len(shape) - 1))
    return w.expand((1,) * dims_before + tuple(shape))


def _confusion_infer(inputs, thresholds):
    _check_sample_weight(inputs, "confusion counts")
    y_true, y_pred = inputs[:2]
    if y_true.rank != y_pred.rank:
        raise ShapeError(
            f"confusion counts: targets {format_shape(y_true.shape)} and predictions {format_shape(y_pred.shape)} differ in rank."
        )
    return [TensorSpec((len(thresholds), 4), "float32")]


_THRESHOLDS: dict = {}  # (thresholds, device) -> tensor: made once, before any CUDA-graph capture reads it


def _thresholds(thresholds, device) -> torch.Tensor:
    # A copy from the host is forbidden inside a capture; the warm-up run before it made this tensor.
    key = (tuple(thresholds), str(device))
    if key not in _THRESHOLDS:
        _THRESHOLDS[key] = torch.tensor(thresholds, dtype=torch.float32, device=device)
    return _THRESHOLDS[key]


def _confusion_counts(y_true, y_pred, *weights, thresholds):
    """Per threshold: [true positives, false positives, true negatives, false negatives], each
    element counted once or (given per-sample weights) by its sample's weight."""
    t = _thresholds(thresholds, y_pred.device).reshape(-1, *([1] * y_pred.dim()))
    predicted = y_pred.float().unsqueeze(0) > t
    actual = (y_true.float() != 0).unsqueeze(0)  # Keras casts targets to bool: any non-zero label is positive
    dims = tuple(range(1, predicted.dim()))
    w = _weights_like(weights[0], y_pred.shape, dims_before=1) if weights else 1.0
    cells = [predicted & actual, predicted & ~actual, ~predicted & ~actual, ~predicted & actual]
    return torch.stack([(cell * w).sum(dims) for cell in cells], dim=1).float()


OPS.append(
    OpDef(
        name="confusion_counts",
        doc="For each threshold: counts of true positives, false positives, true negatives and false negatives "
        "(prediction > threshold is positive; a non-zero target is positive, as Keras casts it to bool), "
        "weighted by an optional third "
        "input of per-sample weights. Shape (thresholds, 4).",
        num_inputs=(2, 3),
        attrs={"thresholds": attr(tuple, items=(float,))},
        infer=_confusion_infer,
        reference=_confusion_counts,
        traits={"reduction"},
    )
)


def _class_ids(x: torch.Tensor, sparse: bool) -> torch.Tensor:
    """Flat class ids: the values themselves, truncated to integers as Keras casts them, or (one-hot
    or scores, sparse=False) the index of each row's largest value."""
    ids = x if sparse else x.argmax(-1)
    return ids.reshape(-1).to(torch.int64)


def _confusion_matrix_infer(inputs, num_classes, sparse_y_true, sparse_y_pred, ignore_class):
    _check_sample_weight(inputs, "confusion matrix")
    y_true, y_pred = inputs[:2]
    true_shape = y_true.shape if sparse_y_true else y_true.shape[:-1]
    pred_shape = y_pred.shape if sparse_y_pred else y_pred.shape[:-1]
    if len(true_shape) != len(pred_shape) and not (len(true_shape) + 1 == len(pred_shape) and pred_shape[-1] == 1) \
            and not (len(pred_shape) + 1 == len(true_shape) and true_shape[-1] == 1):
        raise ShapeError(f"confusion matrix: class ids of targets {format_shape(y_true.shape)} and predictions "
                         f"{format_shape(y_pred.shape)} do not pair up.")
    return [TensorSpec((num_classes, num_classes), "float32")]


def _confusion_matrix(y_true, y_pred, *weights, num_classes, sparse_y_true, sparse_y_pred, ignore_class):
    """counts[t, p]: how many elements of class t were predicted p (or the sum of their samples'
    weights). Ids outside [0, num_classes) (and targets equal to ignore_class) are not counted,
    as Keras's IoU metrics mask them."""
    t, p = _class_ids(y_true, sparse_y_true), _class_ids(y_pred, sparse_y_pred)
    valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_class is not None:
        valid &= t != ignore_class
    flat = torch.where(valid, t * num_classes + p, torch.zeros_like(t))
    counted = valid.to(torch.float32)
    if weights:
        id_shape = y_true.shape if sparse_y_true else y_true.shape[:-1]
        counted = counted * _weights_like(weights[0], id_shape).reshape(-1)
    counts = torch.zeros(num_classes * num_classes, dtype=torch.float32, device=flat.device)
    return counts.index_add_(0, flat, counted).reshape(num_classes, num_classes)  # no host sync


OPS.append(
    OpDef(
        name="confusion_matrix",
        doc="counts[t, p] of elements of true class t predicted as class p (Keras's IoU metrics' state); "
        "class ids are the values (sparse) or each row's argmax; out-of-range ids and ignore_class are skipped; "
        "an optional third input weighs each sample.",
        num_inputs=(2, 3),
        attrs={"num_classes": attr(int), "sparse_y_true": attr(bool, True), "sparse_y_pred": attr(bool, True),
               "ignore_class": attr((int, type(None)), None)},
        infer=_confusion_matrix_infer,
        reference=_confusion_matrix,
        traits={"reduction"},
    )
)
