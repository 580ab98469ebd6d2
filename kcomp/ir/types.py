"""Tensor types of the IR: dtypes, dimensions (static or symbolic) and specs.

A dimension is an int (static) or a str (symbolic). The batch dimension is the
symbol "N"; other dimensions unknown at build time (a variable sequence length)
get symbols "?0", "?1", ... . One symbol stands for one run-time size, so two
values that share a symbol have the same size at run time. A symbol times a
constant is written "N*5": the batch folded with a known axis of 5 (TimeDistributed
runs its layer on a (batch * steps, ...) tensor); `fold_dim` makes one, `dim_size`
reads its size.
"""

from dataclasses import dataclass
from math import prod

import torch

from kcomp.errors import ShapeError, format_shape

BATCH = "N"

# dtype name -> short form used by the printer.
DTYPES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "float64": "f64",
    "int32": "i32",
    "int64": "i64",
    "bool": "bool",
}
TORCH_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
DTYPE_OF_TORCH = {v: k for k, v in TORCH_DTYPES.items()}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
INT_DTYPES = ("int32", "int64")

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorSpec:
    """What a shape rule returns for each output: a shape and a dtype."""

    shape: Shape
    dtype: str

    @property
    def rank(self) -> int:
        return len(self.shape)


_symbol_count = [0]


def fresh_symbol() -> str:
    """A new symbolic dimension ("?k") for a size unknown until run time."""
    _symbol_count[0] += 1
    return f"?{_symbol_count[0] - 1}"


def is_static(dim: Dim) -> bool:
    return isinstance(dim, int)


def dim_parts(dim: Dim) -> tuple[Dim, int]:
    """A dimension as (symbol or size, constant factor): "N*5" -> ("N", 5), "N" -> ("N", 1), 7 -> (7, 1)."""
    if isinstance(dim, str) and "*" in dim:
        symbol, factor = dim.rsplit("*", 1)
        return symbol, int(factor)
    return dim, 1


def fold_dim(dim: Dim, factor: int) -> Dim:
    """dim * factor: a size, or the symbol with its factor ("N" * 5 -> "N*5", "N*5" * 2 -> "N*10")."""
    if is_static(dim):
        return dim * factor
    symbol, own = dim_parts(dim)
    return symbol if own * factor == 1 else f"{symbol}*{own * factor}"


def dim_size(dim: Dim, sizes: dict[str, int]) -> int:
    """A dimension's run-time size, the symbols bound in `sizes` ("N*5" is 5 times N's size)."""
    if is_static(dim):
        return dim
    if dim in sizes:
        return sizes[dim]
    symbol, factor = dim_parts(dim)
    return sizes[symbol] * factor


def is_batch(dim: Dim) -> bool:
    """The batch, or the batch folded with other axes ("N", "N*5")."""
    return dim_parts(dim)[0] == BATCH


def static_size(shape: Shape) -> int | None:
    """Number of elements, or None when some dimension is symbolic."""
    if all(is_static(d) for d in shape):
        return prod(shape)
    return None


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"Received: {what}={axis} for a tensor of rank {rank}. Expected {-rank} <= {what} < {rank}.")
    return axis % rank


def unknown_lengths(a: Dim, b: Dim) -> bool:
    """Two sizes both unknown until run time (not the batch): Keras takes them as equal, as do we."""
    return isinstance(a, str) and isinstance(b, str) and not (is_batch(a) or is_batch(b))


def broadcast_shapes(a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting over static and symbolic dims.

    A symbol matches itself, 1, or another unknown length (checked when the
    data arrives); a symbolic batch against a fixed size would only be right
    for one batch size, so that is refused at build time.
    """
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1 or unknown_lengths(da, db):
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"cannot broadcast shapes {format_shape(a)} and {format_shape(b)}: "
                f"dimension {da if is_static(da) else None} does not match {db if is_static(db) else None}"
            )
    return tuple(reversed(out))


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ShapeError(f"Received: dtype={dtype!r}. Expected one of {sorted(DTYPES)}.")
    return dtype

