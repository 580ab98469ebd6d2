"""Shape-rule helpers shared by the op modules."""

import torch

from kcomp.capture import capture_in_progress
from kcomp.errors import ShapeError, format_shape
from kcomp.ir.types import FLOAT_DTYPES, TensorSpec, broadcast_shapes

NUMBER = (int, float)


def same_as_input(inputs, **attrs):
    return [inputs[0]]


def require_float(spec: TensorSpec, what: str) -> None:
    if spec.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{what} needs a floating-point input, received dtype {spec.dtype}.")


def require_rank(spec: TensorSpec, rank: int, what: str) -> None:
    if spec.rank != rank:
        raise ShapeError(
            f"{what} expects a rank-{rank} input, received shape {format_shape(spec.shape)} (rank {spec.rank})."
        )


def require_same_dtype(specs, what: str) -> str:
    dtypes = {s.dtype for s in specs}
    if len(dtypes) != 1:
        raise ShapeError(f"{what}: inputs have different dtypes {sorted(dtypes)}; cast them to one dtype first.")
    return specs[0].dtype


def broadcast_infer(inputs, **attrs):
    dtype = require_same_dtype(inputs, "elementwise op")
    shape = inputs[0].shape
    for s in inputs[1:]:
        shape = broadcast_shapes(shape, s.shape)
    return [TensorSpec(shape, dtype)]


def dims_match(a, b) -> bool:
    """Two dims are known to agree: the same int or the same symbol."""
    return a == b


def check_dim(a, b, what: str, shape_a, shape_b) -> None:
    if not dims_match(a, b):
        raise ShapeError(f"{what}: incompatible shapes {format_shape(shape_a)} and {format_shape(shape_b)}.")


def can_read_back(t: torch.Tensor) -> bool:
    """Whether a reference may read t's values on the host for a range check: not while a CUDA
    graph is being captured (a read-back is forbidden there; the warm-up run before a capture
    checked a batch of the same shapes)."""
    return not capture_in_progress(t.device)


def _refuse_ids_out_of_range(ids: torch.Tensor, depth: int, what: str) -> None:
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= depth:
        raise ShapeError(f"{what}: class ids must lie in [0, {depth}), received values from {low} to {high}.")


def checked_one_hot(ids: torch.Tensor, depth: int, what: str) -> torch.Tensor:
    """torch's one_hot (int64) of class ids, an id outside [0, depth) refused with a ShapeError that
    names the values. On the CPU one_hot checks the range itself, so the ids are read back only to
    word the error (a check of our own before it cost four more host reads per step); elsewhere they
    are read back first where that is allowed (a CUDA one_hot stops the process with a device assert)."""
    on_cpu = ids.device.type == "cpu"
    if not on_cpu and ids.numel() and can_read_back(ids):
        _refuse_ids_out_of_range(ids, depth, what)
    try:
        return torch.nn.functional.one_hot(ids.long(), depth)
    except RuntimeError:
        if on_cpu and ids.numel():
            _refuse_ids_out_of_range(ids, depth, what)
        raise
