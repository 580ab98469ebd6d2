"""predict in a data-parallel job: each process runs its share of every batch, and the outputs of
all processes are gathered, so every process returns every prediction, as one process would.

Keras's DataParallel predicts the same way (the batch split across the devices, the outputs
joined). The shares are the training step's (kcomp.distribution.step_runner.shard): contiguous
rows, the first n % world processes one row more. A process whose share is empty (a batch of
fewer rows than processes) runs the batch's first row and drops its output: it still joins the
gather, as every process must. Every process must be given the same data, as for fit.
"""

import torch

from kcomp.distribution.step_runner import shard


def sharded_run(run, xs: list[torch.Tensor], group) -> list[torch.Tensor]:
    """run(inputs) -> outputs, on this process's rows of the batch `xs`; the outputs of every
    process joined in row order (each row computed once in the whole job)."""
    n = len(xs[0])
    start, stop = shard(n, group.rank, group.world)
    rows = slice(start, stop) if stop > start else slice(0, 1)
    outs = run([t[rows] for t in xs])
    widest = -(-n // group.world)  # the largest share
    shares = [shard(n, r, group.world) for r in range(group.world)]
    joined = []
    for out in outs:
        # all_gather takes one shape from every process: each share padded to the largest.
        padded = out.new_zeros((widest, *out.shape[1:]))
        padded[: stop - start] = out[: stop - start]
        parts = group.all_gather(padded, "gathering predict's outputs")
        joined.append(torch.cat([part[: b - a] for part, (a, b) in zip(parts, shares, strict=True)]))
    return joined
