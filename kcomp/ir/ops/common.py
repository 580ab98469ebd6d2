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


def _refuse_ids_out_of_range(ids: torch.Tensor, limit: int, what: str, fix: str) -> None:
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= limit:
        raise ShapeError(f"{what} must lie in [0, {limit}), received values from {low} to {high}{fix}.")


def with_ids_in_range(call, ids: torch.Tensor, limit: int, what: str, fix: str = ""):
    """call(), which reads `ids` as indices below `limit` (torch's one_hot, embedding): an id outside
    [0, limit) refused with a ShapeError that names the values ("{what} must lie in ...{fix}."). On
    the CPU torch checks the range itself, so the ids are read back only to word the error (a check
    of our own before it cost two reductions and two host reads per call); elsewhere they are read
    back first where that is allowed (out of range on a GPU is a device assert that stops the process)."""
    on_cpu = ids.device.type == "cpu"
    if not on_cpu and ids.numel() and can_read_back(ids):
        _refuse_ids_out_of_range(ids, limit, what, fix)
    try:
        return call()
    except (RuntimeError, IndexError):  # one_hot's and embedding's range errors
        if on_cpu and ids.numel():
            _refuse_ids_out_of_range(ids, limit, what, fix)
        raise


def checked_one_hot(ids: torch.Tensor, depth: int, what: str, dtype: torch.dtype) -> torch.Tensor:
    """One-hot rows of class ids in `dtype` (shape ids.shape + (depth,)), an id outside [0, depth)
    refused (with_ids_in_range). The ones are scattered into zeros of that dtype: torch's one_hot
    makes int64 rows that a cast then copies, two passes where this is one (about 4 us of 10 on a
    32x10 batch; the values are the same)."""

    def scatter():
        rows = torch.zeros((*ids.shape, depth), dtype=dtype, device=ids.device)
        return rows.scatter_(-1, ids.long().unsqueeze(-1), 1)

    return with_ids_in_range(scatter, ids, depth, f"{what}: class ids")
