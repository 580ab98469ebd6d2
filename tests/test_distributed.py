"""Data-parallel training (kcomp.distribution) on CPU processes over gloo.

Jobs run tests/distributed_worker.py (the digits MLP) under torchrun, or with torchrun's environment
set by hand where a test must read every process's own exit (torchrun ends the others itself when
one fails). Every wait has a timeout, and KCOMP_DIST_TIMEOUT bounds each collective, so a broken
job fails the test instead of hanging the suite.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import kcomp
from kcomp import distribution, optimizers
from kcomp.distribution.split_step import split_at
from kcomp.distribution.step_runner import shard
from kcomp.errors import ArgumentError, KcompError
from kcomp.layers import Dense, Dropout, Input
from kcomp.models import Sequential
from kcomp.runtime.reference import run_reference

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("distributed_worker.py")
JOB_TIMEOUT = 150  # seconds for a whole job (a few epochs of a tiny MLP take ~10 s on a busy 2-core machine)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "TRITON_INTERPRET")}
    env.update(PYTHONPATH=str(ROOT), KCOMP_DIST_TIMEOUT="20", KCOMP_DIST_CHECK="1", OMP_NUM_THREADS="1", **extra)
    return env


def one_process(out: Path, *args) -> dict:
    out.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, str(WORKER), str(out), *args], env=_env(), capture_output=True, text=True,
                          timeout=JOB_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(np.load(out / "rank0.npz"))


def torchrun(n: int, out: Path, *args) -> subprocess.CompletedProcess:
    out.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-addr", "127.0.0.1",
               "--master-port", str(_free_port()), str(WORKER), str(out), *args, "--parallel"]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def by_hand(n: int, out: Path, *args) -> list[tuple[int, str]]:
    """Each process's (exit code, output), started with torchrun's environment but no agent."""
    out.mkdir(exist_ok=True)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(out), *args, "--parallel"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port))
             for r in range(n)]
    results = []
    try:
        for p in procs:
            output, _ = p.communicate(timeout=JOB_TIMEOUT)
            results.append((p.returncode, output))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def assert_same_training(one: dict, job: Path, n: int) -> None:
    ranks = [dict(np.load(job / f"rank{r}.npz")) for r in range(n)]
    for name, value in one.items():
        for r, got in enumerate(ranks):
            if name.startswith("history/"):
                np.testing.assert_allclose(got[name], value, rtol=1e-5, err_msg=f"{name} of process {r}")
            else:
                np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=f"{name} of process {r}")
                np.testing.assert_array_equal(got[name], ranks[0][name], err_msg=f"process {r} left process 0")


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    """One process, two epochs of the digits MLP: 203 samples, the last 21 for validation (Keras's
    split), so training batches of 32 end with one of 22, and validation is one batch of 21."""
    return one_process(tmp_path_factory.mktemp("one"), "fit", "--validation-split", "0.1")


# -- jobs of several processes ------------------------------------------------------------------
def test_two_processes_train_to_the_weights_and_history_of_one(single, tmp_path):
    done = torchrun(2, tmp_path / "two", "fit", "--validation-split", "0.1", "--verbose", "1", "--csv",
                    str(tmp_path / "log.csv"))
    assert "history/val_loss" in single and "history/val_accuracy" in single
    assert_same_training(single, tmp_path / "two", 2)  # predictions too: every process returns every row's
    assert done.stdout.count("Epoch 1/2") == 1  # process 0 alone prints the progress bar
    # Each process predicted its share of each batch (203 + 2 + 5 rows in all), not every row.
    shares = [int(np.load(tmp_path / "two" / f"rank{r}.npz")["rows_predicted_here"]) for r in range(2)]
    assert sum(shares) == 210 and max(shares) < 210, shares
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 3  # one writer: a header and one row per epoch


@pytest.mark.slow
def test_three_processes_with_an_empty_shard_train_as_one(tmp_path):
    # 194 samples in batches of 32: the last batch has 2 rows, so process 2 has none in it.
    one = one_process(tmp_path / "one", "fit", "--samples", "194")
    torchrun(3, tmp_path / "three", "fit", "--samples", "194")
    assert_same_training(one, tmp_path / "three", 3)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumed_in_three_processes_continues_the_loss_curve(tmp_path):
    one = one_process(tmp_path / "one", "fit", "--epochs", "3", "--no-shuffle")
    checkpoint = tmp_path / "two" / "checkpoint.keras"
    torchrun(2, tmp_path / "two", "fit", "--epochs", "2", "--no-shuffle", "--save", str(checkpoint))
    torchrun(3, tmp_path / "three", "fit", "--epochs", "3", "--initial-epoch", "2", "--no-shuffle", "--load",
             str(checkpoint))
    resumed = [dict(np.load(tmp_path / "three" / f"rank{r}.npz")) for r in range(3)]
    for r, got in enumerate(resumed):
        np.testing.assert_allclose(got["history/loss"], one["history/loss"][2:], rtol=1e-5, err_msg=f"process {r}")
        for name in ("dense/kernel", "dense_1/kernel"):
            np.testing.assert_allclose(got[name], one[name], rtol=1e-5, atol=1e-6)


def test_a_killed_process_stops_the_others_with_a_kcomp_error(tmp_path):
    (rc0, out0), (rc1, _) = by_hand(2, tmp_path / "die", "die")
    assert rc1 != 0  # killed in its third batch
    assert rc0 == 3, out0  # the worker's exit for a KcompError
    assert "KCOMP_ERROR" in out0 and "summing the gradients and the logged values failed" in out0 and "the whole job stops" in out0, out0


def test_processes_with_different_models_stop_at_start_naming_the_process(tmp_path):
    results = by_hand(2, tmp_path / "mismatch", "mismatch")
    for rc, output in results:
        assert rc == 3, output
        assert "process(es) [1] differ from process 0's" in output, output
    assert "dense/kernel (64, 24)" in results[1][1] and "dense/kernel (64, 16)" in results[0][1]


def test_weights_that_drift_apart_stop_the_job_at_the_end_of_the_epoch(tmp_path):
    for rc, output in by_hand(2, tmp_path / "drift", "drift", "--epochs", "1"):
        assert rc == 3, output
        assert "weights after epoch 1 of process(es) [1] differ from process 0's" in output, output


# -- in this process --------------------------------------------------------------------------
def _model(dropout=0.0):
    layers = [Input(shape=(7,)), Dense(5, activation="relu")]
    layers += [Dropout(dropout)] if dropout else []
    model = Sequential([*layers, Dense(3, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=29):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 7, generator=g).numpy(), torch.randint(0, 3, (n,), generator=g).numpy()


def test_the_step_cut_at_its_gradients_runs_as_the_whole_step():
    model = _model(dropout=0.3)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # builds the step and the optimizer's slots
    step = next(s for key, s in model._training.steps.items() if key[0] == "train")
    split = split_at(step.graph, step.gradients)
    assert split.gradients == 4 and split.update.nodes and split.backward.nodes
    state = model._training.state
    inputs = [torch.tensor(x[:8]), torch.tensor(y[:8]), torch.ones(8), torch.tensor(0.01)]
    whole = run_reference(step.graph, inputs, state.read(p.name for p in step.graph.params))
    carried = run_reference(split.backward, inputs, state.read(p.name for p in split.backward.params))
    parts = run_reference(split.update, carried, state.read(p.name for p in split.update.params))
    assert len(parts) == len(whole)
    for a, b in zip(parts, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_every_row_once(world):
    for n in range(0, 11):
        rows = [r for rank in range(world) for r in range(*shard(n, rank, world))]
        assert rows == list(range(n))


def test_a_job_of_one_trains_as_without_a_distribution(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    x, y = _data()
    kcomp.utils.set_random_seed(3)
    plain = _model()
    expected = plain.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(3)
    with distribution.DataParallel().scope():
        assert distribution.distribution() is not None
        parallel = _model()
        got = parallel.fit(x, y, batch_size=8, epochs=2, verbose=0).history
        logs = parallel.evaluate(x, y, verbose=0, return_dict=True)
    assert distribution.distribution() is None
    assert got == expected
    assert logs == plain.evaluate(x, y, verbose=0, return_dict=True)
    for a, b in zip(parallel.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))


def test_what_data_parallel_refuses(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distribution.list_devices() == ["cpu:0"]
    with pytest.raises(ArgumentError, match="2 devices.*1 process"):
        distribution.DataParallel(devices=["cpu:0", "cpu:1"])
    with pytest.raises(ArgumentError, match="device_mesh"):
        distribution.DataParallel(device_mesh=object())
    with pytest.raises(ArgumentError, match="DataParallel or None"):
        distribution.set_distribution("data_parallel")
    x, y = _data()
    model = Sequential([Input(shape=(7,)), Dense(3)])
    model.compile(optimizer="sgd", loss=kcomp.losses.MeanSquaredError(reduction="sum"))
    with distribution.DataParallel().scope(), pytest.raises(KcompError, match="reduction='sum'"):
        model.fit(x, np.ones((len(x), 3), "float32"), batch_size=8, verbose=0)


def test_processes_other_than_the_first_draw_their_own_dropout_masks():
    from kcomp.distribution.step_runner import seeded_for_process

    model = _model(dropout=0.5)
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    step = next(s for key, s in model._training.steps.items() if key[0] == "train")
    state = model._training.state
    inputs = [torch.tensor(x[:8]), torch.tensor(y[:8]), torch.ones(8), torch.tensor(0.01)]

    def gradients(graph):
        split = split_at(graph, step.gradients)
        return run_reference(split.backward, inputs, state.read(p.name for p in split.backward.params))[:4]

    first, mine, again, other = (gradients(seeded_for_process(step.graph, r)) for r in (0, 1, 1, 2))
    torch.testing.assert_close(gradients(step.graph), first, rtol=0, atol=0)  # process 0: one process's masks
    torch.testing.assert_close(mine, again, rtol=0, atol=0)  # a process draws the same masks each run
    assert not torch.equal(first[0], mine[0]) and not torch.equal(mine[0], other[0])


def test_a_loss_averaged_over_a_mask_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    inputs = Input(shape=(5,), dtype="int32")
    outputs = Dense(3, activation="softmax")(kcomp.layers.Embedding(10, 4, mask_zero=True)(inputs))
    model = kcomp.models.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.array([[1, 2, 0, 0, 0], [3, 4, 5, 0, 0]] * 4, "int32")
    with distribution.DataParallel().scope(), pytest.raises(KcompError, match=r"output\(s\) \['dense'\].*mask"):
        model.fit(x, np.ones((8, 5), "int64"), batch_size=4, verbose=0)


def assert_buckets_started_during_the_backward(events, first_layer: str, last_layer: str) -> None:
    """`events` of one training step (DataParallelStep.events): two buckets or more, each started in
    the backward; the first before the backward computed its last gradient; the last layer's
    gradients ready (and reduced) before the first layer's."""
    kinds = [e[0] for e in events]
    ready = [e[1] for e in events if e[0] == "ready"]
    starts = [i for i, kind in enumerate(kinds) if kind == "start"]
    assert len(starts) >= 2 and kinds[-2:] == ["backward done", "waited"], events
    assert starts[0] < max(i for i, kind in enumerate(kinds) if kind == "ready"), events
    assert ready.index(f"{last_layer}/kernel") < ready.index(f"{first_layer}/kernel"), events


def test_two_processes_start_each_bucket_as_its_gradients_are_ready_and_train_as_one(single, tmp_path):
    # Buckets of 524 bytes: the last layer's gradients (680 bytes) and the running sums fill the first.
    torchrun(2, tmp_path / "two", "fit", "--validation-split", "0.1", "--bucket-mb", "0.0005", "--events")
    assert_same_training(single, tmp_path / "two", 2)
    for r in range(2):
        events = json.loads((tmp_path / "two" / f"events{r}.json").read_text())
        assert_buckets_started_during_the_backward(events, "dense", "dense_1")
        assert [e for e in events if e[0] == "start"] == [["start", 0], ["start", 1]], events


def test_small_buckets_start_within_the_backward_and_change_nothing(monkeypatch):
    from kcomp.distribution.collectives import buckets

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    tensors = [torch.zeros(n) for n in (3, 20, 2, 2, 30)]  # 12, 80, 8, 8, 120 bytes
    assert buckets(tensors, [4, 3, 2, 1, 0], 16) == [[4], [3, 2], [1], [0]]  # closed once 16 bytes or more
    assert buckets([*tensors, torch.zeros(2, dtype=torch.float64)], [5, 0, 1], 1000) == [[5], [0, 1]]  # a dtype each
    x, y = _data()
    kcomp.utils.set_random_seed(3)
    plain = _model()
    plain.fit(x, y, batch_size=8, epochs=2, verbose=0)
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(3)
    with distribution.DataParallel(bucket_cap_mb=64 / 2**20).scope():  # a job of one: its all-reduces are the identity
        parallel = _model()
        parallel.fit(x, y, batch_size=8, epochs=2, verbose=0)
    step = next(s for key, s in parallel._training.steps.items() if key[0] == "train")
    assert_buckets_started_during_the_backward(step.runner.events, "dense", "dense_1")
    for a, b in zip(parallel.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()))
    with pytest.raises(ArgumentError, match="bucket_cap_mb=0"):
        distribution.DataParallel(bucket_cap_mb=0)


def test_a_distribution_set_between_two_fits_takes_over_the_step(monkeypatch):
    from kcomp.distribution.step_runner import DataParallelStep

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=8, verbose=0)
    step = next(s for key, s in model._training.steps.items() if key[0] == "train")
    assert not isinstance(step.runner, DataParallelStep)
    with distribution.DataParallel().scope():
        model.fit(x, y, batch_size=8, verbose=0)
        assert isinstance(step.runner, DataParallelStep)
    model.fit(x, y, batch_size=8, verbose=0)
    assert not isinstance(step.runner, DataParallelStep)


@pytest.mark.parametrize("rows,world", [(7, 3), (2, 3), (1, 2), (8, 2)])
def test_predict_shares_gathered_from_every_process_are_every_row_once(rows, world):
    """sharded_run in `world` threads standing in for processes (all_gather by a barrier): each runs
    its share of the batch (an empty share one row, dropped) and returns every row's output in order."""
    import threading

    from kcomp.distribution.sharded_predict import sharded_run

    board, barrier = [None] * world, threading.Barrier(world)

    class Group:
        def __init__(self, rank):
            self.rank, self.world = rank, world

        def all_gather(self, tensor, what):
            board[self.rank] = tensor.clone()
            barrier.wait(timeout=20)
            parts = [t.clone() for t in board]
            barrier.wait(timeout=20)
            return parts

    x = torch.arange(rows * 3, dtype=torch.float32).reshape(rows, 3)
    ran, results = [0] * world, [None] * world

    def process(rank):
        def run(xs):
            ran[rank] += len(xs[0])
            return [xs[0] * 2, xs[0].sum(dim=1, keepdim=True)]
        results[rank] = sharded_run(run, [x], Group(rank))

    threads = [threading.Thread(target=process, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    for doubled, sums in results:
        assert torch.equal(doubled, x * 2) and torch.equal(sums, x.sum(dim=1, keepdim=True))
    assert ran == [max(1, b - a) for a, b in (shard(rows, r, world) for r in range(world))]
