"""Sums over the processes of a data-parallel job, as nodes of the step graph.

A synchronized BatchNormalization (kcomp/layers/normalization.py) takes its batch statistics
over the whole job's batch: each process sums its own rows, and replica_sum adds those sums up
over the processes, forward and (its gradient being the same sum) backward. The op itself is
what one process computes: the identity. A data-parallel step (kcomp.distribution.step_runner)
runs each replica_sum node as an all-reduce over its process group instead; the fused pipeline
(the triton backends, which train in one process) drops the node (kcomp/passes/simplify.py).

`cotangent=True` marks the backward's sums, of gradients: a data-parallel step weighs each
process's gradients by its share of the batch, and weighs these sums the same way.

all_reduce is the plain sum over the processes, with the weighing already in the graph: a
data-parallel step on the fused plan (kcomp/distribution/reduce_in_step.py) puts its gradients'
buckets and its replica_sums in the step as all_reduce nodes, which no pass removes; the plan runs
each as one flat all-reduce over the job's process group (kcomp.runtime.plan.Plan's `collective`).
Without a group it is the identity, as in a job of one. It has no gradient: it sits after the
backward, or inside a replica_sum's weighing, never under autodiff.
"""

from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float


def _infer(inputs, cotangent):
    for x in inputs:
        require_float(x, "replica_sum")
    return list(inputs)


def _reference(*xs, cotangent):
    return xs  # one process: each sum over the job is its own value


def _vjp(b, node, grads):
    """y_i = sum over processes of x_i: the gradient of every process's x_i is the sum over the
    processes of their gradients of y_i (the transpose of an all-reduce is an all-reduce)."""
    present = [g for g in grads if g is not None]
    if not present:
        return [None] * len(grads)
    summed = iter(b.emit("replica_sum", present, cotangent=True))
    return [None if g is None else next(summed) for g in grads]


OPS = [
    OpDef(
        name="replica_sum",
        doc="Each input summed over the processes of a data-parallel job (one all-reduce for all of "
        "them); the identity in one process. cotangent=True: sums of gradients, in the backward.",
        num_inputs=(1, None),
        attrs={"cotangent": attr(bool, False)},
        infer=_infer,
        reference=_reference,
        vjp=_vjp,
        traits={"collective"},
        num_outputs=None,
    ),
    OpDef(
        name="all_reduce",
        doc="Each input summed over the processes of a data-parallel job, as one flat all-reduce (the "
        "fused plan runs it over the job's process group); the identity in one process. No gradient.",
        num_inputs=(1, None),
        attrs={},
        infer=lambda inputs: _infer(inputs, False),
        reference=lambda *xs: xs,
        traits={"collective"},
        num_outputs=None,
    ),
]
