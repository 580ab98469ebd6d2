"""Example inputs: CPU tensors of the shapes a kernel node takes, on which its launch is recorded
(the batch and every other symbolic dimension bound to fixed sizes)."""

import torch

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.types import BATCH, FLOAT_DTYPES, TORCH_DTYPES, is_static
from kcomp.runtime.plan import concrete


def example_sizes(values, batch: int = 128, other: int = 64) -> dict[str, int]:
    """A size for every symbolic dimension of `values`: the batch "N" -> batch, any other symbol -> other."""
    sizes = {}
    for v in values:
        for d in v.shape:
            if not is_static(d):
                sizes[d] = batch if d == BATCH else other
    return sizes


def _body(node_or_body) -> Graph:
    return node_or_body.attrs["body"] if isinstance(node_or_body, Node) else node_or_body


def _example_tensor(v: Value, sizes: dict[str, int], float_dtype: str | None, generator) -> torch.Tensor:
    shape = concrete(v, sizes)
    if v.dtype in FLOAT_DTYPES:
        dtype = TORCH_DTYPES[float_dtype or v.dtype]
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.zeros(shape, dtype=TORCH_DTYPES[v.dtype])  # ids and masks: only their shape matters here


def example_inputs(node_or_body, batch: int = 128, other: int = 64, float_dtype: str | None = None) -> list[torch.Tensor]:
    """CPU tensors for a kernel node's inputs (or a body graph's): the batch bound to `batch`.

    float_dtype="bfloat16" casts every floating input, as a `--dtype bfloat16`
    build would store it; integer inputs keep their dtype.
    """
    body = _body(node_or_body)
    sizes = example_sizes(body.inputs, batch, other)
    generator = torch.Generator().manual_seed(0)
    return [_example_tensor(v, sizes, float_dtype, generator) for v in body.inputs]


def example_output(node_or_body, batch: int = 128, other: int = 64, float_dtype: str | None = None) -> torch.Tensor:
    """The output buffer `launch(..., out=)` writes, in float_dtype when given (for bf16 stores)."""
    body = _body(node_or_body)
    sizes = example_sizes([*body.inputs, *body.outputs], batch, other)
    (v,) = body.outputs
    dtype = TORCH_DTYPES[float_dtype if float_dtype and v.dtype in FLOAT_DTYPES else v.dtype]
    return torch.empty(concrete(v, sizes), dtype=dtype)
