"""The reference schedule as generated straight-line code (kcomp/runtime/straight_line.py): the same
tensors as the interpreter's loop over the same steps, bit for bit, with each value dropped after its
last reader, and code a person can read."""

import re

import torch

from kcomp.ir.interpret import run_steps
from kcomp.runtime.reference import ReferenceRun
from kcomp.runtime.straight_line import StraightLine


def _step_of(layers, x, y, loss, optimizer="adam"):
    from kcomp.models import Sequential
    from kcomp.training import loop

    model = Sequential(layers)
    model.compile(optimizer=optimizer, loss=loss, backend="reference")
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)  # builds the step and its slots
    ys = loop.targets(model, y)
    step = loop._step(model, model._training, "train", ys)
    data = [*loop.model_inputs(model, x), *ys, loop.sample_weights(len(x), None, None, ys), torch.tensor(1e-3)]
    state = model._training.state.read([p.name for p in step.graph.params])
    return step, data, {name: t.clone() for name, t in state.items()}


def _same_as_the_interpreter(step, data, state):
    run = ReferenceRun(step.graph)
    got = run(data, {n: t.clone() for n, t in state.items()})
    want = run_steps(run.graph, run.steps, data, {n: t.clone() for n, t in state.items()}, run.release, run.taped)
    assert len(got) == len(want) == len(step.graph.outputs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    return run


def test_a_dense_step_with_dropout_and_nan_is_the_interpreters():
    from kcomp.layers import Dense, Dropout, Input

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(13, 5, generator=g), torch.randint(0, 3, (13,), generator=g)
    step, data, state = _step_of([Input(shape=(5,)), Dense(7, activation="relu"), Dropout(0.3),
                                  Dense(3, activation="softmax")], x, y, "sparse_categorical_crossentropy")
    kernel = next(name for name in state if name.endswith("kernel"))
    state[kernel][1, 2] = float("nan")
    run = _same_as_the_interpreter(step, data, state)
    # the dropout draws its mask once for both passes (two outputs), the gradient reuses it
    assert re.search(r"\n    v\d+, v\d+, = F\[\d+\]\(.*\)  # _dropout_drawing_mask\n", run.code.source)
    assert "# _dropout_reusing_mask\n" in run.code.source


def test_an_lstm_step_that_keeps_its_forward_tape_is_the_interpreters():
    """The coarse lstm_grad takes the forward's autograd tape (kcomp.ir.saved_forwards): the
    generated code runs inside the same per-run store."""
    from kcomp.layers import LSTM, Dense, Embedding, Input

    g = torch.Generator().manual_seed(4)
    x, y = torch.randint(1, 20, (6, 9), generator=g, dtype=torch.int32), torch.randint(0, 2, (6, 1), generator=g).float()
    step, data, state = _step_of([Input(shape=(9,), dtype="int32"), Embedding(20, 4), LSTM(5),
                                  Dense(1, activation="sigmoid")], x, y, "binary_crossentropy", "rmsprop")
    _same_as_the_interpreter(step, data, state)


def test_the_code_names_each_op_and_drops_values_after_their_last_reader():
    from kcomp.layers import Dense, Input

    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    step, data, state = _step_of([Input(shape=(3,)), Dense(2, activation="softmax")], x, y,
                                 "sparse_categorical_crossentropy", "sgd")
    run = ReferenceRun(step.graph)
    source = run.code.source
    assert source.startswith("def run(inputs, params, F, A, K):")
    for op in ("narrow_dense", "softmax", "softmax_cross_entropy_grad", "optimizer_update"):
        assert f"  # {op}\n" in source
    dropped = [line for line in source.splitlines() if line.strip().startswith("del ")]
    assert len(dropped) == sum(1 for r in run.release if r)
    assert "dense/kernel" in source  # parameters are read by name


def test_multi_output_and_one_sequence_results():
    """A step returning several tensors unpacks them; a one-output step may return a 1-tuple."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("tiny")
    a = b.input((2,), "float32", "a")
    graph = b.finish([b.emit1("neg", [a])])
    (node,) = graph.nodes
    steps = [(lambda t: (t * 2,), node.inputs, {}, node.outputs)]
    code = StraightLine(graph, steps, [[]])
    assert torch.equal(code([torch.ones(2)], {})[0], torch.full((2,), 2.0))


def test_a_step_function_named_with_a_line_break_stays_a_comment():
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("tiny")
    a = b.input((2,), "float32", "a")
    graph = b.finish([b.emit1("neg", [a])])
    (node,) = graph.nodes

    def step(t):
        return -t

    step.__name__ = "neg\nraise SystemExit('ran')"
    code = StraightLine(graph, [(step, node.inputs, {}, node.outputs)], [[]])
    assert "# neg raise SystemExit('ran')\n" in code.source
    assert torch.equal(code([torch.ones(2)], {})[0], -torch.ones(2))


def _constant_graph(output_the_reshape: bool):
    """y = x + reshape(constant 2.0), with the reshaped constant also an output when asked."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("constants")
    x = b.input((3,), "float32", "x")
    two = b.emit1("reshape", [b.emit1("constant", [], value=2.0, dtype="float32")], shape=(1,))
    y = b.emit1("add", [x, two])
    return b.finish([y, two] if output_the_reshape else [y])


def test_constants_are_made_once_and_read_from_K():
    run = ReferenceRun(_constant_graph(False))
    assert re.search(r"= K\[0\]  # constant, made once\n", run.code.source)
    assert re.search(r"= K\[1\]  # reshape, made once\n", run.code.source)
    x = torch.tensor([1.0, -2.0, float("nan")])
    for _ in range(2):  # the same tensors on every run
        (y,) = run([x], {})
        torch.testing.assert_close(y, x + 2.0, rtol=0, atol=0, equal_nan=True)


def test_a_constant_that_would_reach_the_caller_is_made_every_run():
    """The reshape's output is a graph output: a shared tensor there could be written over by its
    caller (a donated state), so neither it nor the constant it views is folded."""
    run = ReferenceRun(_constant_graph(True))
    assert "K[" not in run.code.source
    x = torch.zeros(3)
    (_, first), (_, second) = run([x], {}), run([x], {})
    first.add_(1.0)
    assert second.item() == 2.0
