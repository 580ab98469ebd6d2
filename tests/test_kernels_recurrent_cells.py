"""The GRU and SimpleRNN recurrence kernels (kernels/recurrent_gru.py, recurrent_simple_rnn.py)
and the decomposition that makes them (kcomp/passes/decompose_recurrent.py), under Triton's
interpreter at small ragged sizes; the LSTM's are in test_kernels_recurrent.py."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan_gru import GRU_SCAN_TILED_MAX_UNITS
from kcomp.ir.registry import OPS
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import PIPELINE
from kernel_helpers import (
    assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, assert_launch_matches_reference,
    kernels_of, with_nonfinite,
)
from recurrent_cases import FEATURES, TIME, UNITS, assert_decomposed_step_equals_the_whole_ops, recurrent_model
from tolerances import tolerance

BATCH = 3  # with recurrent_cases' TIME, FEATURES, UNITS: ragged, no size a block size divides
# Larger ragged sizes: 20 units keep the tiles on chip (BLOCK_H 32), 40 read them every step (BLOCK_H 64).
LARGER = [20, 40]


def _randn(*shape, generator, scale=1.0):
    """Normal values; recurrent kernels take scale units ** -0.5 (as an orthogonal one's rows), so
    the state neither dies nor grows over the steps."""
    return torch.randn(*shape, generator=generator) * scale


def _check_kernel(graph, inputs, template):
    """The fused plan against the reference, then its one kernel launched into NaN-poisoned outputs
    (every element written)."""
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    (kernel,) = kernels_of(run.fused)
    assert kernel.attrs["template"] == template
    assert_launch_matches_reference(graph, kernel, inputs, kind="accumulating", precision="ieee")


# --- GRU ----------------------------------------------------------------------------------------

GRU_SCANS = [(True, True), (True, False), (False, False)]  # (reset_after, a recurrent bias)


def _gru_scan_graph(units, reset_after, bias, save):
    b = GraphBuilder("gru_scan")
    xw = b.input((BATCH, TIME, 3 * units), "float32", "xw")
    u = b.input((units, 3 * units), "float32", "recurrent")
    rb = [b.input((3 * units,), "float32", "recurrent_bias")] if bias else []
    return b.finish(list(b.emit("gru_scan", [xw, u, *rb], reset_after=reset_after, save=save)))


def _gru_scan_inputs(units, bias, seed):
    g = torch.Generator().manual_seed(seed)
    return [_randn(BATCH, TIME, 3 * units, generator=g), _randn(units, 3 * units, generator=g, scale=units ** -0.5),
            *([_randn(3 * units, generator=g)] if bias else [])]


@pytest.mark.parametrize("save", [False, True])
@pytest.mark.parametrize("reset_after, bias", GRU_SCANS)
def test_gru_scan_kernel_matches_the_reference(reset_after, bias, save):
    graph = _gru_scan_graph(UNITS, reset_after, bias, save)
    _check_kernel(graph, _gru_scan_inputs(UNITS, bias, seed=int(save)), "gru_scan")


@pytest.mark.parametrize("units", LARGER)
def test_gru_scan_kernel_at_larger_sizes(units):
    for reset_after, bias in GRU_SCANS[0], GRU_SCANS[2]:
        graph = _gru_scan_graph(units, reset_after, bias, save=True)
        assert_compiled_matches_reference(graph, _gru_scan_inputs(units, bias, seed=units), kind="accumulating",
                                          precision="ieee")


def test_gru_scan_kernel_propagates_nan_and_inf():
    for reset_after, bias in GRU_SCANS[0], GRU_SCANS[2]:
        inputs = _gru_scan_inputs(UNITS, bias, seed=3)
        inputs[0] = with_nonfinite(inputs[0])
        assert_compiled_matches_reference(_gru_scan_graph(UNITS, reset_after, bias, save=True), inputs,
                                          kind="accumulating", precision="ieee")


def _gru_grad_case(units, reset_after, has_dseq, has_dh, seed):
    b = GraphBuilder("gru_scan_grad")
    u = b.input((units, 3 * units), "float32", "recurrent")
    h_seq = b.input((BATCH, TIME, units), "float32", "h_seq")
    saved = b.input((BATCH, TIME, (4 if reset_after else 3) * units), "float32", "saved")
    grads = [b.input(shape, "float32", name) for present, shape, name in
             ((has_dseq, (BATCH, TIME, units), "d_seq"), (has_dh, (BATCH, units), "d_h")) if present]
    graph = b.finish(list(b.emit("gru_scan_grad", [u, h_seq, saved, *grads], reset_after=reset_after,
                                 has_dseq=has_dseq, has_dh=has_dh)))
    g = torch.Generator().manual_seed(seed)
    xw, recurrent, *bias = _gru_scan_inputs(units, reset_after, seed)
    forward = OPS["gru_scan"].reference(xw, recurrent, *bias, reset_after=reset_after, save=True)
    return graph, [recurrent, *forward, *(_randn(*v.shape, generator=g) for v in grads)]


@pytest.mark.parametrize("has_dseq, has_dh", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_scan_grad_kernel_matches_the_reference(reset_after, has_dseq, has_dh):
    _check_kernel(*_gru_grad_case(UNITS, reset_after, has_dseq, has_dh, seed=7), "gru_scan_grad")


@pytest.mark.parametrize("units", LARGER)
def test_gru_scan_grad_kernel_at_larger_sizes(units):
    for reset_after in (True, False):
        graph, inputs = _gru_grad_case(units, reset_after, True, True, seed=units)
        assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")


# --- SimpleRNN ----------------------------------------------------------------------------------


def _simple_rnn_graphs(units, activation):
    b = GraphBuilder("simple_rnn_scan")
    xw, u = b.input((BATCH, TIME, units), "float32", "xw"), b.input((units, units), "float32", "recurrent")
    forward = b.finish([b.emit1("simple_rnn_scan", [xw, u], activation=activation)])
    b = GraphBuilder("simple_rnn_scan_grad")
    u, h_seq = b.input((units, units), "float32", "recurrent"), b.input((BATCH, TIME, units), "float32", "h_seq")
    d_seq, d_h = b.input((BATCH, TIME, units), "float32", "d_seq"), b.input((BATCH, units), "float32", "d_h")
    backward = b.finish([b.emit1("simple_rnn_scan_grad", [u, h_seq, d_seq, d_h], activation=activation,
                                 has_dseq=True, has_dh=True)])
    return forward, backward


@pytest.mark.parametrize("units", [UNITS, *LARGER])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_kernels_match_the_reference(activation, units):
    forward, backward = _simple_rnn_graphs(units, activation)
    g = torch.Generator().manual_seed(units)
    xw, recurrent = _randn(BATCH, TIME, units, generator=g), _randn(units, units, generator=g, scale=units ** -0.5)
    h_seq = OPS["simple_rnn_scan"].reference(xw, recurrent, activation=activation)
    assert (h_seq == 0).any() == (activation == "relu")  # relu's zero side is reached: its gradient is tested
    grads = [_randn(BATCH, TIME, units, generator=g), _randn(BATCH, units, generator=g)]
    if units == UNITS:
        _check_kernel(forward, [xw, recurrent], "simple_rnn_scan")
        _check_kernel(backward, [recurrent, h_seq, *grads], "simple_rnn_scan_grad")
    else:
        assert_compiled_matches_reference(forward, [xw, recurrent], kind="accumulating", precision="ieee")
        assert_compiled_matches_reference(backward, [recurrent, h_seq, *grads], kind="accumulating", precision="ieee")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn_scan_kernel_propagates_nan_and_inf(activation):
    forward, _ = _simple_rnn_graphs(UNITS, activation)
    g = torch.Generator().manual_seed(4)
    inputs = [with_nonfinite(_randn(BATCH, TIME, UNITS, generator=g)), _randn(UNITS, UNITS, generator=g, scale=UNITS ** -0.5)]
    assert_compiled_matches_reference(forward, inputs, kind="accumulating", precision="ieee")


def test_simple_rnn_scan_grad_one_gradient_at_a_time():
    """The backward given only every step's gradient, or only the last h's."""
    for has_dseq, has_dh in (True, False), (False, True):
        b = GraphBuilder("simple_rnn_scan_grad")
        u, h_seq = b.input((UNITS, UNITS), "float32", "recurrent"), b.input((BATCH, TIME, UNITS), "float32", "h_seq")
        grad = b.input((BATCH, TIME, UNITS) if has_dseq else (BATCH, UNITS), "float32", "grad")
        graph = b.finish([b.emit1("simple_rnn_scan_grad", [u, h_seq, grad], has_dseq=has_dseq, has_dh=has_dh)])
        g = torch.Generator().manual_seed(5)
        recurrent = _randn(UNITS, UNITS, generator=g, scale=UNITS ** -0.5)
        h = OPS["simple_rnn_scan"].reference(_randn(BATCH, TIME, UNITS, generator=g), recurrent, activation="tanh")
        _check_kernel(graph, [recurrent, h, _randn(*grad.shape, generator=g)], "simple_rnn_scan_grad")


# --- the decomposition: training steps ----------------------------------------------------------

GRU_VARIANTS = [dict(), dict(return_sequences=True), dict(go_backwards=True), dict(use_bias=False),
                dict(reset_after=False), dict(reset_after=False, return_sequences=True, go_backwards=True),
                dict(reset_after=False, use_bias=False), dict(return_state=True), dict(stacked=True),
                dict(bidirectional=True)]
SIMPLE_RNN_VARIANTS = [dict(), dict(activation="relu", return_sequences=True), dict(go_backwards=True),
                       dict(use_bias=False, activation="relu"), dict(return_state=True), dict(stacked=True),
                       dict(bidirectional=True)]
# The LSTM's flags are test_kernels_recurrent.py's; here the two layers of a stacked or Bidirectional
# one (the forward scan of the upper layer once, shared with its backward, was twice before).
CELLS = {"gru": (kcomp.layers.GRU, GRU_VARIANTS), "simple_rnn": (kcomp.layers.SimpleRNN, SIMPLE_RNN_VARIANTS),
         "lstm": (kcomp.layers.LSTM, [dict(stacked=True), dict(bidirectional=True)])}


def _model(cell, variant):
    return recurrent_model(CELLS[cell][0], variant)


def _variant_id(variant):
    return "-".join(f"{k}" if v is True else f"{k}={v}" for k, v in variant.items()) or "default"


CELL_VARIANTS = [pytest.param(cell, v, id=f"{cell}-{_variant_id(v)}") for cell, (_, vs) in CELLS.items() for v in vs]


@pytest.mark.parametrize("cell, variant", CELL_VARIANTS)
def test_decomposed_training_step_equals_the_whole_ops(cell, variant):
    layers = 2 if variant.get("stacked") or variant.get("bidirectional") else 1
    assert_decomposed_step_equals_the_whole_ops(_model(cell, variant)(), cell, layers)


@pytest.mark.parametrize("cell, variant", [("gru", {}), ("gru", dict(reset_after=False, go_backwards=True)),
                                           ("simple_rnn", dict(activation="relu", return_sequences=True))],
                         ids=["gru", "gru-reset_before-backwards", "simple_rnn-relu-sequences"])
def test_compiled_training_steps_match_the_reference(cell, variant):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(_model(cell, variant), x, y, steps=2)


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_a_training_step_runs_the_recurrence_in_two_kernels(cell):
    """Forward and backward: the projections are matmul kernels, the time loops one scan and one
    scan-gradient launch each, not a launch per step, and no coarse op is left to torch."""
    model = _model(cell, {})()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(np.ones((2, TIME, FEATURES), "float32"), np.eye(3, dtype="float32")[[0, 1]])
    (step,) = model._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert templates.count(f"{cell}_scan") == 1 and templates.count(f"{cell}_scan_grad") == 1
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and cell in i.node.op]


def test_what_the_kernels_do_not_compute_keeps_the_whole_op():
    """More units than the kernels hold: the coarse ops, run by torch (a SimpleRNN past the tiled
    limit: test_kernels_simple_rnn_tiled.py; any activation in the scans:
    test_kernels_recurrent_activations.py, test_kernels_simple_rnn_activations.py)."""
    from kcomp.compiler import train_step_graph

    cases = [(kcomp.layers.GRU(GRU_SCAN_TILED_MAX_UNITS + 1), "gru")]
    for layer, cell in cases:
        model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), layer, kcomp.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", backend="reference")
        decomposed, _ = run_pipeline(train_step_graph(model), passes=PIPELINE[:-1])
        ops = {n.op for n in decomposed.nodes}
        assert {cell, f"{cell}_grad"} <= ops and f"{cell}_scan" not in ops, (layer, ops)


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
def test_predict_runs_one_scan(cell):
    """A forward graph: one scan kernel, which keeps every h_t alone (nothing saved for a backward)."""
    model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), CELLS[cell][0](UNITS), kcomp.layers.Dense(2)])
    run = assert_compiled_matches_reference(model, [torch.randn(BATCH, TIME, FEATURES)], kind="long", precision="ieee")
    (scan,) = [k for k in kernels_of(run.fused) if k.attrs["template"].startswith(cell)]
    assert scan.attrs["template"] == f"{cell}_scan" and len(scan.outputs) == 1


def _keras_stack(lib):
    """GRU (reset_after), SimpleRNN (relu, go_backwards), GRU (reset_after=False), Bidirectional
    SimpleRNN: every kind of scan, stacked, as Keras builds them."""
    L = lib.layers
    return lib.Sequential([lib.Input((TIME, FEATURES)), L.GRU(UNITS, return_sequences=True),
                           L.SimpleRNN(UNITS, activation="relu", return_sequences=True, go_backwards=True),
                           L.GRU(UNITS, reset_after=False, return_sequences=True),
                           L.Bidirectional(L.SimpleRNN(UNITS), merge_mode="sum"), L.Dense(2)])


def test_predictions_and_a_training_step_are_keras():
    """Keras 3 side by side, on the generated kernels: the same predictions, loss and weights after an
    SGD step (Keras's weights copied in, moved off their initial values first)."""
    from keras_oracle import keras, twins

    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(5, TIME, FEATURES)).astype("float32"), rng.normal(size=(5, 2)).astype("float32")
    ours, theirs = twins(_keras_stack)
    ours.set_weights([(0.4 * rng.normal(size=w.shape)).astype("float32") for w in ours.get_weights()])
    theirs.set_weights(ours.get_weights())
    ours.compile(optimizer=kcomp.optimizers.SGD(0.5), loss="mse", backend="triton-interpret")
    theirs.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **tolerance("float32", "long"))
    np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), **tolerance("float32", "long"))
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **tolerance("float32", "long"), err_msg=w.path)
    (step,) = ours._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert templates.count("gru_scan") == 2 and templates.count("simple_rnn_scan_grad") == 3, templates


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [32, 64]  # on chip, and (the GRU's) read every step; larger GRUs: test_kernels_recurrent_tiled_gru.py
AOT_TEMPLATES = ["gru_scan", "gru_scan_grad", "gru_scan", "gru_scan_grad", "simple_rnn_scan", "simple_rnn_scan_grad"]


def emit_gru_scans(b, units, masked=False, recurrent_masks=False) -> list:
    """A training step's GRU scans at time 50 on b: gru_scan and gru_scan_grad with reset_after,
    then without (also the tiled kernels' AOT cases, there with a mask too; with recurrent dropout
    masks, test_kernels_recurrent_gru_rnn_dropout's); their outputs."""
    outputs = []
    flags = dict(masked=masked, recurrent_masks=recurrent_masks)
    for reset_after in (True, False):
        xw = b.input(("N", 50, 3 * units), "float32", f"xw_{reset_after}")
        u = b.input((units, 3 * units), "float32", f"recurrent_{reset_after}")
        rb = [b.input((3 * units,), "float32", "recurrent_bias")] if reset_after else []
        m = [b.input(("N", 50), "float32", f"mask_{reset_after}")] if masked else []
        m += [b.input(("N", 3, units), "float32", f"recurrent_masks_{reset_after}")] if recurrent_masks else []
        h_seq, saved = b.emit("gru_scan", [xw, u, *rb, *m], reset_after=reset_after, save=True, **flags)
        outputs += [h_seq, *b.emit("gru_scan_grad", [u, h_seq, saved, *m, h_seq], reset_after=reset_after,
                                   has_dseq=True, has_dh=False, **flags)]
    return outputs


def compile_cases(units_list) -> list[dict]:
    """The kernels compiled for sm_90 at each hidden size (the GRU with reset_after, then without,
    then SimpleRNN): one record per kernel."""
    from aot_helpers import graph_kernel_records

    records = []
    for units in units_list:
        b = GraphBuilder("scans")
        outputs = emit_gru_scans(b, units)
        xw, u = b.input(("N", 50, units), "float32", "xw"), b.input((units, units), "float32", "recurrent")
        h_seq = b.emit1("simple_rnn_scan", [xw, u])
        outputs += [h_seq, b.emit1("simple_rnn_scan_grad", [u, h_seq, h_seq], has_dseq=True, has_dh=False)]
        records += graph_kernel_records(b.finish(outputs), units=units)
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=600)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS for t in AOT_TEMPLATES]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"].get("HMMA", 0) > 0, r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
