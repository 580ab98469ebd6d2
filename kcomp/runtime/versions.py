"""When what a tensor holds may have changed: the one test the runtime's caches use.

torch counts every in-place change of a tensor in its version counter (`Tensor._version`,
which autograd reads for the same purpose). kcomp's kernels that write a buffer in place,
and a replayed CUDA graph, do not go through torch, so whoever runs them bumps the counters
itself (CapturedStep._bump_versions). Then (identity, version) changes whenever a tensor
is replaced or written, and a cache keyed by it (values computed from the weights once per
change of them; weights copied to a device) is never stale.
"""

import torch


def contents_key(tensors) -> tuple:
    """A key equal for two calls only if each tensor is the same object, unchanged in between."""
    return tuple((id(t), t._version) for t in tensors)


def mark_written(tensors: list[torch.Tensor]) -> None:
    """Count a write torch did not see (a kernel's in-place store, a graph replay) in each
    tensor's version counter, as a torch in-place op would. Host-only: no device work."""
    torch.autograd.graph.increment_version(tensors)
