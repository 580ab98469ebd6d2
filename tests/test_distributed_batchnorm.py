"""BatchNormalization in data-parallel training (kcomp.distribution), on CPU processes over gloo.

synchronized=True: the batch statistics, and their gradients, are summed over the processes
inside the step (replica_sum nodes), so N processes train as one process on the global batch.
synchronized=False (Keras's default): each process normalizes by its own rows and keeps its own
moving statistics. The jobs run tests/distributed_worker.py (the digits MLP, its hidden layer
Dense + BatchNormalization + relu) as tests/test_distributed.py does.
"""

import numpy as np
import pytest
import torch

import kcomp
import kcomp.dsl
from distributed_worker import build, digits
from kcomp.distribution.split_step import split_at
from kcomp.ir.registry import OPS
from kcomp.layers import BatchNormalization, Dense, Input
from kcomp.models import Sequential
from kcomp.runtime.reference import run_reference
from test_distributed import assert_same_training, one_process, torchrun


def test_two_processes_with_synchronized_batch_normalization_train_as_one_on_the_global_batch(tmp_path):
    # 203 samples in batches of 32: the last batch of 11 rows is shared 6 + 5 (unequal shares).
    one = one_process(tmp_path / "one", "fit", "--bn", "sync", "--validation-split", "0.1")
    torchrun(2, tmp_path / "two", "fit", "--bn", "sync", "--validation-split", "0.1")
    assert {"batch_normalization/moving_mean", "batch_normalization/moving_variance", "history/val_loss"} <= set(one)
    assert_same_training(one, tmp_path / "two", 2)


@pytest.mark.slow
def test_three_processes_with_an_empty_shard_and_synchronized_batch_normalization_train_as_one(tmp_path):
    # 194 samples in batches of 32: the last batch has 2 rows, so process 2 adds nothing to its statistics.
    one = one_process(tmp_path / "one", "fit", "--bn", "sync", "--samples", "194")
    torchrun(3, tmp_path / "three", "fit", "--bn", "sync", "--samples", "194")
    assert_same_training(one, tmp_path / "three", 3)


def test_unsynchronized_batch_normalization_keeps_each_processes_own_statistics(tmp_path):
    """One step of 32 rows in 2 processes: each process's moving statistics move towards its own 16
    rows' batch statistics (Keras's update, biased variance); the trainable weights stay identical,
    and the every-epoch digest check (KCOMP_DIST_CHECK=1 in these jobs) leaves the statistics out."""
    torchrun(2, tmp_path / "two", "fit", "--bn", "local", "--samples", "32", "--epochs", "1", "--no-shuffle")
    ranks = [dict(np.load(tmp_path / "two" / f"rank{r}.npz")) for r in range(2)]
    x, _ = digits(32)
    kernel = build(16, "local").weights[0].numpy()  # the weights process 0 starts (and broadcasts)
    kcomp.backend.clear_session()
    for r, got in enumerate(ranks):
        h = torch.tensor(x[16 * r: 16 * (r + 1)], dtype=torch.float64) @ torch.tensor(kernel, dtype=torch.float64)
        mean, var = h.mean(0), h.var(0, unbiased=False)
        np.testing.assert_allclose(got["batch_normalization/moving_mean"], 0.01 * mean.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got["batch_normalization/moving_variance"], 0.99 + 0.01 * var.numpy(), rtol=1e-5)
        for name in ("dense/kernel", "batch_normalization/gamma", "dense_1/kernel"):
            np.testing.assert_array_equal(got[name], ranks[0][name], err_msg=f"{name} of process {r}")
    assert not np.allclose(ranks[0]["batch_normalization/moving_mean"], ranks[1]["batch_normalization/moving_mean"])


# -- in this process ----------------------------------------------------------------------------
def _fit(synchronized: bool, seed=3):
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(seed)
    model = Sequential([Input(shape=(5, 6, 3)), kcomp.layers.Conv2D(4, 3, use_bias=False),
                        BatchNormalization(synchronized=synchronized, momentum=0.9), kcomp.layers.Flatten(),
                        Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(29, 5, 6, 3, generator=g) * 3 + 2).numpy()  # a mean far from 0: E[x^2] - E[x]^2 would lose it
    y = torch.randint(0, 3, (29,), generator=g).numpy()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    return model, history


def test_synchronized_batch_normalization_in_one_process_is_the_batchs_own():
    """Without a distribution, Keras's synchronized=True takes the batch's own statistics (TensorFlow's
    moments without a replica context): kcomp's sums over a job of one give the same training."""
    plain, expected = _fit(False)
    weights = [np.asarray(w.numpy()) for w in plain.weights]
    synced, got = _fit(True)
    for key, values in expected.items():
        np.testing.assert_allclose(got[key], values, rtol=1e-5)
    for w, want in zip(synced.weights, weights, strict=True):
        np.testing.assert_allclose(np.asarray(w.numpy()), want, rtol=1e-5, atol=1e-6, err_msg=w.path)
    step = next(s for key, s in synced._training.steps.items() if key[0] == "train")
    sums = [n for n in step.graph.nodes if n.op == "replica_sum"]
    # forward: the sums and the count, then the squares about the mean; backward: their gradients
    assert [n.attrs["cotangent"] for n in sums] == [False, False, True, True]
    # beta's gradient (the sum of dy) is also a term of the input's: the cut keeps it in the backward
    split = split_at(step.graph, step.gradients)
    state, g = synced._training.state, torch.Generator().manual_seed(4)
    inputs = [torch.randn(8, 5, 6, 3, generator=g), torch.randint(0, 3, (8,), generator=g), torch.ones(8),
              torch.tensor(0.01)]
    whole = run_reference(step.graph, inputs, state.read(p.name for p in step.graph.params))
    carried = run_reference(split.backward, inputs, state.read(p.name for p in split.backward.params))
    parts = run_reference(split.update, carried, state.read(p.name for p in split.update.params))
    for a, b in zip(parts, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_synchronized_round_trips_and_is_a_boolean():
    layer = BatchNormalization(synchronized=True)
    assert BatchNormalization.from_config(layer.get_config()).synchronized is True
    with pytest.raises(kcomp.errors.ArgumentError, match="synchronized='yes'"):
        BatchNormalization(synchronized="yes")
    model = kcomp.dsl.loads("model m {\n  input(4)\n  batch_normalization(synchronized=true)\n  dense(2)\n}\n")["m"]
    assert model.layers[0].synchronized is True and model.layers[0].get_config()["synchronized"] is True


def test_replica_sum_is_the_identity_in_one_process_and_its_own_transpose():
    from kcomp.ir.builder import GraphBuilder
    from kcomp.passes.autodiff import gradients
    from kcomp.passes.simplify import simplify

    b = GraphBuilder("sums")
    x, y = b.input((None, 3), "float64", "x"), b.input((3,), "float64", "y")
    sx, sy = b.emit("replica_sum", [x, y])
    loss = b.emit1("sum", [b.emit1("mul", [b.emit1("mul", [sx, sx]), sy])])
    dx, dy = gradients(b, loss, [x, y])
    graph = b.finish([sx, sy, dx, dy])
    assert [n.attrs["cotangent"] for n in graph.nodes if n.op == "replica_sum"] == [False, True]
    xs, ys = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    got = run_reference(graph, [xs, ys], {})
    xt, yt = xs.clone().requires_grad_(), ys.clone().requires_grad_()
    want = torch.autograd.grad((xt * xt * yt).sum(), [xt, yt])
    torch.testing.assert_close(got[0], xs, rtol=0, atol=0)
    torch.testing.assert_close(got[2], want[0])
    torch.testing.assert_close(got[3], want[1])
    assert "replica_sum" not in {n.op for n in simplify(graph).nodes}  # the fused pipeline runs in one process
    assert all(a is b for a, b in zip(OPS["replica_sum"].reference(xs, ys, cotangent=False), (xs, ys), strict=True))


def test_synchronized_batch_normalization_trains_on_the_fused_kernels_as_on_the_reference():
    """The fused pipeline (one process) drops the replica_sums and fuses the rest; the same training."""
    g = torch.Generator().manual_seed(6)
    x, y = (torch.randn(13, 7, generator=g) * 2 + 1).numpy(), torch.randint(0, 3, (13,), generator=g).numpy()
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(1)
        model = Sequential([Input(shape=(7,)), Dense(5, use_bias=False), BatchNormalization(synchronized=True),
                            Dense(3, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", backend=backend)
        history = model.fit(x, y, batch_size=13, epochs=2, verbose=0).history
        results.append((history["loss"], [np.asarray(w.numpy()) for w in model.weights]))
    (loss, weights), (fused_loss, fused_weights) = results
    np.testing.assert_allclose(fused_loss, loss, rtol=1e-5)
    for a, b in zip(fused_weights, weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
