"""Data-parallel training on the fused plan of generated kernels (kcomp/distribution/fused_step.py,
reduce_in_step.py): CPU processes over gloo, the kernels under Triton's interpreter (backend
"triton-interpret"); on a GPU the same plan runs on NCCL, captured.

Jobs of several processes train the digits MLP (tests/distributed_worker.py) to the weights and
History of one process on the same kernels; in this process, the step graph with its sums: where
the all_reduce nodes stand and what reads them, and a job of one that trains exactly as no job.
"""

import json

import numpy as np
import pytest

import kcomp
from distributed_worker import build, digits
from kcomp import distribution
from kcomp.distribution.reduce_in_step import GRADIENT_SUMS, SHARE_INPUTS, summed_in_step
from kcomp.ir.registry import OPS
from test_distributed import assert_same_training, one_process, torchrun

FUSED = ("--backend", "triton-interpret")


def test_two_processes_on_the_kernels_train_to_the_weights_and_history_of_one(tmp_path):
    one = one_process(tmp_path / "one", "fit", *FUSED, "--validation-split", "0.1")
    torchrun(2, tmp_path / "two", "fit", *FUSED, "--validation-split", "0.1", "--bucket-mb", "0.0005", "--events")
    assert "history/val_loss" in one
    assert_same_training(one, tmp_path / "two", 2)
    for r in range(2):
        # Buckets of 524 bytes: the last layer's gradients (680 bytes), summed while the first layer's
        # gradient kernels run; the first layer's, right before the update that waits for both.
        events = json.loads((tmp_path / "two" / f"events{r}.json").read_text())
        assert [e[:2] for e in events] == [["overlap", 0], ["overlap", 1]], events
        assert events[0][2] > 0, events


@pytest.mark.slow
def test_three_processes_with_an_empty_shard_and_synchronized_batch_normalization_on_the_kernels(tmp_path):
    # 194 samples in batches of 32: the last batch has 2 rows, so process 2 has none in it.
    one = one_process(tmp_path / "one", "fit", *FUSED, "--bn", "sync", "--samples", "194")
    torchrun(3, tmp_path / "three", "fit", *FUSED, "--bn", "sync", "--samples", "194")
    assert_same_training(one, tmp_path / "three", 3)


# -- in this process ----------------------------------------------------------------------------
def _train_step(model):
    x, y = digits(40)
    model.fit(x, y, batch_size=20, epochs=1, verbose=0)
    return next(s for key, s in model._training.steps.items() if key[0] == "train")


def test_each_bucket_is_summed_after_its_last_gradient_and_only_the_update_reads_the_sums():
    step = _train_step(build(16, "sync", backend="reference"))
    graph = summed_in_step(step.graph, step.gradients, cap_bytes=1)  # every gradient its own bucket
    assert [v.name for v in graph.inputs[-3:]] == list(SHARE_INPUTS)
    assert not [n for n in graph.nodes if n.op == "replica_sum"]  # each one an all_reduce, weighed
    position = {v.id: i for i, n in enumerate(graph.nodes) for v in n.outputs}
    buckets = [n for n in graph.nodes if n.op == "all_reduce" and n.origin == GRADIENT_SUMS]
    assert len(buckets) == len(step.gradients)
    sums = {}
    for i, node in enumerate(graph.nodes):
        if node in buckets:
            (weighed,) = node.inputs
            (gradient, share) = graph.nodes[position[weighed.id]].inputs
            assert share.name == "share" and position[gradient.id] == i - 2  # right after the gradient's node
            sums[gradient.id] = node.outputs[0].id
    gradient_ids = {g.id for g in step.gradients}
    raw = {n.origin for n in graph.nodes if any(v.id in gradient_ids for v in n.inputs)}
    # the weighing of each, and the batch normalization's input gradient, which reads beta's own gradient
    assert raw == {GRADIENT_SUMS, "batch_normalization/grad"}
    assert {(n.op, n.origin) for n in graph.nodes if any(v.id in sums.values() for v in n.inputs)} == {
        ("optimizer_update", "optimizer")}
    # bucketed at the default cap: one all_reduce for the whole model's gradients
    whole = summed_in_step(step.graph, step.gradients, cap_bytes=25 * 2**20)
    (bucket,) = [n for n in whole.nodes if n.op == "all_reduce" and n.origin == GRADIENT_SUMS]
    assert len(bucket.inputs) == len(step.gradients)
    assert OPS["all_reduce"].reference(*bucket.inputs[:1]) == bucket.inputs[:1]  # one process: the identity


def test_a_job_of_one_trains_on_the_kernels_exactly_as_without_a_distribution():
    x, y = digits(75)
    alone = build(16, "sync", backend="triton-interpret")
    history = alone.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    model = build(16, "sync", backend="triton-interpret")
    with distribution.DataParallel().scope():
        job = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    step = next(s for key, s in model._training.steps.items() if key[0] == "train")
    assert type(step.runner).__name__ == "FusedDataParallelStep"
    assert step.runner.all_reduces == 6 * 5  # 6 steps: the gradients' bucket, 2 x 2 batch normalization sums
    assert job == history
    for a, b in zip(alone.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert kcomp.distribution.distribution() is None
