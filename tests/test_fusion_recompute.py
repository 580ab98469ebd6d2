"""Fewer launches for small steps: cheap elementwise values copied into their readers
(kcomp/passes/recompute.py), operand trees in epilogues and reduce prologues, binary accuracy
as comparisons; and the sigmoid + binary cross-entropy step they fuse, against the reference."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import kcomp
from kcomp.layers import Dense, Input
from kcomp.models import Sequential
from kcomp.passes import run_pipeline
from kcomp.passes.fuse import Fusion, launches
from kcomp.passes.pipeline import PIPELINE, STEP_PIPELINE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_launch_counts import step_launches  # noqa: E402
from kernel_helpers import assert_compiled_steps_match_the_reference  # noqa: E402
from tolerances import tolerance  # noqa: E402


def _sentiment_step():
    from aot_helpers import example_graphs

    (graph,) = [g for _, name, g in example_graphs(training=True) if name == "imdb_lstm:train"]
    return graph


def test_the_sentiment_training_step_runs_in_21_launches():
    """examples/imdb_lstm.k's step: binary cross-entropy, its gradient and the accuracy were 18
    kernels and a torch op (38 launches in all); now 2 reduce kernels for the loss, one for the
    accuracy, 2 pointwise kernels for the gradient; the LSTM's last h_t is a view the Dense
    matmuls read through its strides, not a torch copy; and d recurrent's matmul reads the h
    sequence one step late (shift) where a pad and a copy wrote it (23 launches before)."""
    fused, _ = run_pipeline(_sentiment_step())
    kernels, torch_ops = step_launches(fused)
    assert "correct" not in torch_ops
    loss_kernels = [n.attrs["template"] for n in fused.nodes if n.op == "kernel"
                    and any(b.origin.startswith("loss") and b.op != "constant" for b in n.attrs["body"].nodes)]
    assert sorted(loss_kernels) == ["pointwise"] * 2 + ["reduce"] * 3, loss_kernels
    assert not {"pad", "shift", "copy"} & set(torch_ops), torch_ops
    assert kernels + sum(torch_ops.values()) <= 21, (kernels, torch_ops)  # the last h_t: a view


def test_copies_are_kept_only_where_they_remove_launches():
    """For every example graph, forward and step: never more launches than without copies."""
    from aot_helpers import example_graphs

    for _, name, graph in example_graphs(training=True):
        step = name.endswith(":train")
        passes = STEP_PIPELINE if step else PIPELINE
        decomposed, _ = run_pipeline(graph, passes=passes[:-1])
        plain = Fusion(decomposed, hoisted=not step).run()
        assert launches(passes[-1][1](decomposed)) <= launches(plain), name


def _graph_of(model):
    from kcomp.compiler import train_step_graph

    model.compile(optimizer="sgd", loss="binary_crossentropy", backend="reference")
    return train_step_graph(model)


def test_what_is_never_copied():
    """A value a random draw also reads (relu's output, read by the dropout), the draw itself, and
    the reductions and matmuls stay one computation each. (The sigmoid is copied: since the clip
    is one op, its 8 readers are all pointwise.)"""
    from kcomp.passes.recompute import recompute

    kcomp.backend.clear_session()
    model = Sequential([Input(shape=(4,)), Dense(3, activation="relu"), kcomp.layers.Dropout(0.5), Dense(1, activation="sigmoid")])
    decomposed, _ = run_pipeline(_graph_of(model), passes=STEP_PIPELINE[:-1])
    copied = recompute(decomposed, Fusion(decomposed, hoisted=False).is_pointwise)
    count = lambda g, op: sum(n.op == op for n in g.nodes)  # noqa: E731
    for op in ("dropout", "relu", "matmul", "mean", "sum"):
        assert count(copied, op) == count(decomposed, op), op
    assert count(copied, "clip") > count(decomposed, "clip")  # the clipped probability is copied


def _classifier():
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(3)
    return Sequential([Input(shape=(5,)), Dense(6, activation="tanh"), Dense(1, activation="sigmoid")])


def test_a_sigmoid_binary_crossentropy_step_matches_the_reference():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 5)).astype("float32")
    y = rng.integers(0, 2, (7, 1)).astype("float32")
    assert_compiled_steps_match_the_reference(_classifier, x, y, steps=3, loss="binary_crossentropy")


def test_clipped_and_nan_probabilities_match_the_reference():
    """Saturated sigmoids (probabilities clipped to 1e-7 and 1 - 1e-7, whose gradient masks are 0),
    then an infinite weight: tanh(inf) = 1 for most samples, 0 * inf = NaN for the one whose input
    there is 0 (NaN loss, NaN and inf through the gradient), as the reference computes them."""
    x = np.random.default_rng(5).normal(size=(6, 5)).astype("float32")
    x[:2] *= 1e4  # saturates the tanh and (with the large last kernel below) the sigmoid
    x[3, 1] = 0.0
    y = np.array([[1], [0], [1], [0], [1], [0]], "float32")
    results = []
    for backend in ("reference", "triton-interpret"):
        model = _classifier()
        weights = model.get_weights()
        weights[2] = weights[2] * 60.0
        model.set_weights(weights)
        model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"], backend=backend)
        logs = [model.train_on_batch(x, y, return_dict=True)]
        weights = model.get_weights()
        weights[0][1, 0] = np.inf
        model.set_weights(weights)
        logs.append(model.train_on_batch(x, y, return_dict=True))
        results.append((logs, model.get_weights()))
    (ref_logs, ref_w), (tri_logs, tri_w) = results
    tol = tolerance("float32", "long")
    assert math.isclose(ref_logs[0]["loss"], tri_logs[0]["loss"], rel_tol=tol["rtol"]), (ref_logs, tri_logs)
    assert ref_logs[0]["accuracy"] == tri_logs[0]["accuracy"]
    assert math.isnan(ref_logs[1]["loss"]) and math.isnan(tri_logs[1]["loss"])
    assert ref_logs[1]["accuracy"] == pytest.approx(tri_logs[1]["accuracy"])
    assert any(np.isnan(w).any() for w in ref_w)
    for a, b in zip(ref_w, tri_w, strict=True):
        np.testing.assert_allclose(a, b, **tol)  # NaN and inf where the reference has them
