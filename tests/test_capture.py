"""The CUDA-graph capture logic, checked on the CPU with an emulated graph (tests/capture_emulator.py).

On a GPU, kcomp replays every training step and forward from a captured graph;
these tests run the same code paths under Triton's interpreter with a stand-in
that replays only what was recorded, and compare with running every step as
it is (no capture).
"""

import math

import numpy as np
import pytest
import torch

import kcomp
from capture_emulator import EmulatedGraphs, HostReadInCapture, emulated_cuda_graphs
from kcomp import optimizers
from kcomp.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, Input, MaxPooling2D
from kcomp.models import Sequential
from kcomp.runtime.cuda_graphs import CapturedStep


def _train(make_model, x, y, captured: bool, compile_args: dict, fit_args: dict):
    """Losses and metrics of train_on_batch, fit and evaluate, and the weights after them."""
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(7)
    model = make_model()
    model.compile(backend="triton-interpret", **compile_args())  # fresh optimizer and metrics
    logs = []
    if captured:
        with emulated_cuda_graphs() as graphs:
            logs += _session(model, x, y, fit_args)
    else:
        graphs = None
        logs += _session(model, x, y, fit_args)
    return logs, model.get_weights(), graphs


def _session(model, x, y, fit_args) -> list[dict]:
    logs = [model.train_on_batch(x[:8], y[:8], return_dict=True) for _ in range(3)]  # replays 2 and 3
    history = model.fit(x, y, shuffle=True, verbose=0, **fit_args)
    logs += [dict(zip(history.history, values)) for values in zip(*history.history.values())]
    model.set_weights([w * 0.9 for w in model.get_weights()])  # the user replaces the weights
    logs.append(model.train_on_batch(x[:8], y[:8], return_dict=True))
    logs.append(model.evaluate(x, y, batch_size=6, verbose=0, return_dict=True))
    return logs


def _assert_same_training(make_model, x, y, compile_args, fit_args):
    (plain_logs, plain_w, _), (graph_logs, graph_w, graphs) = (
        _train(make_model, x, y, captured, compile_args, fit_args) for captured in (False, True)
    )
    assert len(plain_logs) == len(graph_logs)
    for a, b in zip(plain_logs, graph_logs):
        assert a.keys() == b.keys()
        for key in a:
            assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-6), (key, a, b)
    for a, b in zip(plain_w, graph_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert graphs.graphs and all(g.replays > 0 for g in graphs.graphs[:1])
    return graphs


def test_an_mlp_trained_from_replayed_graphs_equals_running_every_step():
    """Adam with a decaying learning rate, Dropout (its mask follows the step count on the device),
    metrics with thresholds (AUC), a validation split, a partial last batch, set_weights between
    steps: every number a replayed graph gives equals the step run as it is."""

    def make():
        return Sequential([Input(shape=(12,)), Dense(10, activation="relu"), Dropout(0.3, seed=5),
                           Dense(3, activation="softmax")])

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 12)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 30), 3)
    schedule = optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)
    graphs = _assert_same_training(
        make, x, y,
        lambda: {"optimizer": optimizers.Adam(learning_rate=schedule, clipnorm=1.0), "loss": "categorical_crossentropy",
                 "metrics": ["accuracy", kcomp.metrics.AUC(num_thresholds=7)]},
        {"batch_size": 7, "epochs": 2, "validation_split": 0.2},  # 24 training rows: 7, 7, 7, 3
    )
    assert sum(g.replays for g in graphs.graphs) >= 8


@pytest.mark.slow
def test_a_cnn_with_batch_norm_trained_from_replayed_graphs_equals_running_every_step():
    def make():
        return Sequential([Input(shape=(6, 6, 2)), Conv2D(3, 3, padding="same", activation="relu"),
                           BatchNormalization(), MaxPooling2D(), Flatten(), Dense(4, activation="softmax")])

    rng = np.random.default_rng(1)
    x = rng.normal(size=(14, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 4, 14)
    _assert_same_training(
        make, x, y,
        lambda: {"optimizer": optimizers.SGD(learning_rate=0.1, momentum=0.9), "loss": "sparse_categorical_crossentropy",
                 "metrics": ["accuracy"]},
        {"batch_size": 8, "epochs": 1},
    )


def test_predict_replays_a_captured_forward_and_recaptures_after_new_weights():
    model = Sequential([Input(shape=(5,)), Dense(4, activation="tanh"), Dense(2)])
    x = np.random.default_rng(2).normal(size=(9, 5)).astype("float32")
    want = model.predict(x, verbose=0)
    model.compile(backend="triton-interpret", precision="ieee")
    with emulated_cuda_graphs() as graphs:
        for _ in range(2):
            np.testing.assert_allclose(model.predict(x, batch_size=9, verbose=0), want, rtol=1e-5, atol=1e-6)
        assert [g.replays for g in graphs.graphs] == [2]
        model.set_weights([w * 2 for w in model.get_weights()])
        got = model.predict(x, batch_size=9, verbose=0)
    model.compile(backend="reference")
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


# The emulator itself: it must fail the way a real capture would, or the tests above prove nothing.

class _PlanOf:
    """A stand-in plan whose run is `fn(inputs, params)`."""

    def __init__(self, fn):
        self.fn = fn

    def run(self, inputs, params, into=None):
        return self.fn(inputs, params)


def test_the_emulator_refuses_a_host_read_inside_a_capture():
    plan = _PlanOf(lambda inputs, params: [inputs[0] * inputs[0].sum().item()])
    with pytest.raises(HostReadInCapture, match="item"):
        CapturedStep(plan, [torch.ones(3)], {}, [None], "cpu", EmulatedGraphs())


def test_the_emulator_freezes_host_values_and_undoes_the_captures_writes():
    """A scalar the host computes during the capture is replayed as it was then (as on a GPU), and
    the writes the capture recorded only happen at a replay."""
    calls = []
    buffer = torch.zeros(2)

    def run(inputs, params):
        calls.append(1)
        buffer.add_(1.0)
        return [inputs[0] * float(len(calls))]  # a host value: 1 in the warm-up, 2 in the capture

    step = CapturedStep(_PlanOf(run), [torch.ones(2)], {}, [None], "cpu", EmulatedGraphs())
    assert buffer.tolist() == [1.0, 1.0]  # the warm-up ran; the capture only recorded
    assert step.run([torch.ones(2)])[0].tolist() == [1.0, 1.0]  # the warm-up's own outputs
    for _ in range(3):
        assert step.run([torch.full((2,), 3.0)])[0].tolist() == [6.0, 6.0]  # frozen at 2, new input read
    assert len(calls) == 2 and buffer.tolist() == [4.0, 4.0]


def test_staging_launches_only_for_what_changed():
    """Each launch outside the graph costs host time on a GPU: a constant learning rate is written
    once, default sample weights (batch stride 0) once, the step count and the batch's rows every step."""
    from collections import Counter

    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls[getattr(func, "__name__", "")] += 1
            return func(*args, **(kwargs or {}))

    data = torch.arange(12.0).reshape(6, 2)
    weights = torch.ones(()).expand(6)
    seen = []
    step = CapturedStep(_PlanOf(lambda inputs, params: seen.append([t.clone() for t in inputs]) or [inputs[0]]),
                        [data, weights, 0.01, 1.0], {}, [None], "cpu", rows=torch.tensor([0, 1]))
    step.run([data, weights, 0.01, 1.0], rows=torch.tensor([0, 1]))
    counter = Count()
    with counter:
        step.run([data, weights, 0.01, 2.0], rows=torch.tensor([4, 2]))
    assert counter.calls["index_select"] == 1 and counter.calls["fill_"] == 1 and counter.calls["copy_"] == 0
    x, w, lr, count = seen[-1]
    assert x.tolist() == [[8.0, 9.0], [4.0, 5.0]] and w.tolist() == [1.0, 1.0]
    assert math.isclose(lr.item(), 0.01, rel_tol=1e-6) and count.item() == 2.0
    # Other weights in between (a train_on_batch with sample_weight): the uniform ones are written again after.
    step.run([data, torch.arange(6.0), 0.01, 3.0], rows=torch.tensor([4, 2]))
    assert seen[-1][1].tolist() == [4.0, 2.0]
    step.run([data, weights, 0.01, 4.0], rows=torch.tensor([4, 2]))
    assert seen[-1][1].tolist() == [1.0, 1.0]


# New weights written over the old ones in place (Plan.in_place_outputs): no copy per weight per step.

def _update_and_read_graph(update_first: bool):
    """new_P = P * mean(x) (a pointwise kernel) and z = x @ P (a matmul), in either order."""
    from kcomp import ops
    from kcomp.ir.builder import GraphBuilder
    from kcomp.ir.types import BATCH

    b = GraphBuilder("update_and_read")
    x = b.input((BATCH, 4), "float32", "x")
    p = b.param("P", (4, 3), "float32", "P")
    with ops.tracing(b):
        if update_first:
            new = ops.multiply(p, ops.mean(x))
            z = ops.matmul(x, p)
        else:
            z = ops.matmul(x, p)
            new = ops.multiply(p, ops.mean(x))
    return b.finish([new, z], kind="step")  # a step updates its weights: nothing is hoisted


@pytest.mark.parametrize("update_first", [False, True])
def test_a_new_value_is_written_in_place_only_when_nothing_reads_the_old_one_after(update_first):
    from kcomp.passes import run_pipeline
    from kcomp.runtime.plan import Plan
    from kcomp.runtime.reference import run_reference

    graph = _update_and_read_graph(update_first)
    fused, _ = run_pipeline(graph)
    plan = Plan(fused, "ieee")
    kinds = [s.node.attrs["template"] for s in plan.instructions]
    assert kinds.index("pointwise") < kinds.index("matmul") if update_first else kinds.index("matmul") < kinds.index("pointwise")
    allowed = plan.in_place_outputs({0: "P"})
    assert allowed == ({} if update_first else {0: "P"})
    x, p = torch.randn(5, 4), torch.randn(4, 3)
    want = run_reference(graph, [x], {"P": p.clone()})

    def run_in_place(positions):
        buffer = p.clone()
        got = plan.run([x], {"P": buffer}, into={i: buffer for i in positions})
        return got, buffer

    got, buffer = run_in_place(allowed)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    if allowed:
        assert got[0] is buffer  # the kernel wrote the new value into the parameter's own buffer
    else:  # what the check prevents: the matmul would read the new P
        got, _ = run_in_place([0])
        assert not torch.allclose(got[1], want[1], rtol=1e-3, atol=1e-3)


def test_every_weight_slot_and_running_sum_is_written_in_place():
    from kcomp.layers import Dense, Input

    model = Sequential([Input(shape=(6,)), Dense(5, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(np.ones((4, 6), "float32"), np.array([0, 1, 2, 1]))
    (step,) = model._training.steps.values()
    written = {name for i, name in enumerate(step.runner.writes) if name is not None}
    assert set(step.runner.in_place.values()) == written
    assert len(written) == 4 * 3 + 2  # 4 weights, 2 Adam slots each; the loss sum, the iteration count
    assert {"accumulator/train/loss", "optimizer/iterations"} <= written


def test_a_captured_training_step_is_its_kernels_and_little_else():
    """What a replay launches: the plan's kernels and nothing else. No copy per weight or slot
    (written in place), no fill per constant or batch count (made once per plan), no copy of the
    optimizer's address tables (filled once when the capture ends: kcomp.capture.outside_the_graph)."""
    from kcomp.layers import Dense, Input

    model = Sequential([Input(shape=(6,)), Dense(5, activation="relu"), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], backend="triton-interpret")
    with emulated_cuda_graphs() as graphs:
        model.fit(np.ones((8, 6), "float32"), np.array([0, 1, 2, 1, 0, 1, 2, 1]), batch_size=8, epochs=2, verbose=0)
    (graph,) = graphs.graphs
    (step,) = model._training.steps.values()
    launches = [e for e in graph.log if e[0] == "launch"]
    # Calls that touch no device memory: views, allocations, and the host side of the optimizer's tables.
    host_only = {"__get__", "view", "reshape", "permute", "transpose", "expand", "empty", "tensor", "arange",
                 "repeat_interleave"}
    torch_calls = [e for e in graph.log if e[0] == "torch"]
    other = [e[1].__name__ for e in torch_calls if e[1].__name__ not in host_only
             and not (e[1].__name__ == "contiguous" and e[4] is e[2][0])]  # contiguous() of a contiguous tensor: itself
    assert len(launches) == len(step.runner.plan.kernels)
    assert other == [], other


def test_predict_after_more_training_sees_the_weights_the_step_wrote_in_place():
    """The forward plan computes values from the weights once per change of them (batch norm's
    folded scale and shift), noticed through the tensors' version counters; a kernel writing a
    weight in place does not bump one by itself, so the step does."""
    from kcomp.layers import Dense, Input

    model = Sequential([Input(shape=(5,)), Dense(6), BatchNormalization(), Dense(2)])
    model.compile(optimizer="sgd", loss="mse", backend="triton-interpret", precision="ieee")
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 5)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    for _ in range(2):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        got = model.predict(x, verbose=0)
        twin = Sequential([Input(shape=(5,)), Dense(6), BatchNormalization(), Dense(2)])
        twin.set_weights(model.get_weights())
        np.testing.assert_allclose(got, twin.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_validation_does_not_make_the_training_step_capture_again():
    """Each step graph is captured once per batch shape: the validation step making its own
    buffers (its running sums) leaves the training step's captures valid."""
    from kcomp.layers import Dense, Input

    model = Sequential([Input(shape=(4,)), Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], backend="triton-interpret")
    x, y = np.ones((20, 4), "float32"), np.arange(20) % 3
    with emulated_cuda_graphs() as graphs:
        model.fit(x, y, batch_size=8, epochs=3, validation_split=0.2, verbose=0)  # 16 training rows: 2 batches of 8
    steps = {kind: s for (kind, *_), s in model._training.steps.items()}
    assert len(steps["train"].runner.captured) == 1 and len(graphs.graphs) == 2  # train (8 rows), test (4 rows)
    assert [g.replays for g in graphs.graphs] == [5, 2]  # 6 training batches, 3 validation batches: the first of each ran for real


@pytest.mark.parametrize("through_a_view", [False, True])
def test_a_reduction_reading_the_parameter_as_it_loads_does_not_write_it_in_place(through_a_view):
    """new_P = sum(x * P, axis 1) + P: the reduction reads P (directly or as a reshaped view) at
    the input's indices, which other programs of the kernel may read after one has stored its
    outputs, so its result must not go into P's buffer; an epilogue-only reader (a running sum) may."""
    from kcomp.ir.builder import GraphBuilder
    from kcomp.passes import run_pipeline
    from kcomp.runtime.plan import Plan
    from kcomp.runtime.reference import run_reference

    c = 100  # more outputs than one program of the interpreter's config owns
    b = GraphBuilder("read_as_it_loads")
    x = b.input((c, c), "float32", "x")
    p = b.param("P", (c,), "float32", "P")
    read = b.emit1("reshape", [p], shape=(1, c)) if through_a_view else p
    total = b.emit1("sum", [b.emit1("mul", [x, read])], axes=(1,), keepdims=False)
    graph = b.finish([b.emit1("add", [total, p])], kind="step")
    fused, _ = run_pipeline(graph)
    plan = Plan(fused, "ieee")
    assert [s.node.attrs["template"] for s in plan.instructions if s.kind == "kernel"] == ["reduce"]
    assert plan.in_place_outputs({0: "P"}) == {}
    x_value, p_value = torch.randn(c, c), torch.randn(c)
    (want,) = run_reference(graph, [x_value], {"P": p_value.clone()})
    (got,) = plan.run([x_value], {"P": p_value.clone()})
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
