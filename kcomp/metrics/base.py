"""The Metric base: per-batch values emitted into the step graph, a running state, a result.

A metric emits per-sample values into the step graph and what a batch adds to its running state
(`batch_state`); the step adds that into a device tensor, and the runtime divides only when a
progress line or the epoch's logs need the number.
"""

import math

import torch

from kcomp import losses, ops


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

def _as_float_pair(y_true, y_pred):
    y_true, y_pred = losses.same_rank(y_true, y_pred)
    if ops.dtype(y_true) != ops.dtype(y_pred):
        y_true = ops.cast(y_true, ops.dtype(y_pred))
    return y_true, y_pred

