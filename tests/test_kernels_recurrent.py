"""The LSTM recurrence kernels (kernels/recurrent.py) and the decomposition that makes them
(kcomp/passes/decompose_recurrent.py), under Triton's interpreter at small ragged sizes."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS, lstm_scan_reference
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import PIPELINE
from kernel_helpers import assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, kernels_of
from recurrent_cases import assert_decomposed_step_equals_the_whole_ops, recurrent_model

BATCH, TIME, FEATURES, UNITS = 3, 7, 5, 6  # ragged: no size a block size divides


def _scan_graph(save):
    b = GraphBuilder("scan")
    xw = b.input((BATCH, TIME, 4 * UNITS), "float32", "xw")
    u = b.input((UNITS, 4 * UNITS), "float32", "recurrent")
    return b.finish(list(b.emit("lstm_scan", [xw, u], save=save)))


@pytest.mark.parametrize("save", [False, True])
def test_scan_kernel_matches_the_reference(save):
    g = torch.Generator().manual_seed(int(save))
    inputs = [torch.randn(BATCH, TIME, 4 * UNITS, generator=g), torch.randn(UNITS, 4 * UNITS, generator=g) * 0.5]
    run = assert_compiled_matches_reference(_scan_graph(save), inputs, kind="accumulating", precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == ["lstm_scan"]


@pytest.mark.parametrize("has_dseq, has_dh, has_dc", [(True, True, True), (True, False, False), (False, True, False),
                                                      (False, False, True), (False, True, True)])
def test_scan_grad_kernel_matches_the_reference(has_dseq, has_dh, has_dc):
    b = GraphBuilder("scan_grad")
    u = b.input((UNITS, 4 * UNITS), "float32", "recurrent")
    c_seq = b.input((BATCH, TIME, UNITS), "float32", "c_seq")
    gates = b.input((BATCH, TIME, 4 * UNITS), "float32", "gates")
    grads = [b.input(shape, "float32", name) for present, shape, name in
             ((has_dseq, (BATCH, TIME, UNITS), "d_seq"), (has_dh, (BATCH, UNITS), "d_h"), (has_dc, (BATCH, UNITS), "d_c"))
             if present]
    graph = b.finish([b.emit1("lstm_scan_grad", [u, c_seq, gates, *grads], has_dseq=has_dseq, has_dh=has_dh,
                              has_dc=has_dc)])
    g = torch.Generator().manual_seed(7)
    recurrent = torch.randn(UNITS, 4 * UNITS, generator=g) * 0.5
    _, cs, gate_values = lstm_scan_reference(torch.randn(BATCH, TIME, 4 * UNITS, generator=g), recurrent, save=True)
    inputs = [recurrent, cs, gate_values, *(torch.randn(v.shape, generator=g) for v in grads)]
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == ["lstm_scan_grad"]


LSTM_VARIANTS = [dict(), dict(return_sequences=True), dict(go_backwards=True), dict(use_bias=False),
                 dict(return_sequences=True, go_backwards=True, use_bias=False), dict(return_state=True)]


def _lstm_model(variant, units=UNITS):
    return recurrent_model(kcomp.layers.LSTM, variant, units)


@pytest.mark.parametrize("variant", LSTM_VARIANTS, ids=lambda v: "-".join(f"{k}" for k in v) or "default")
def test_decomposed_training_step_equals_the_lstm_op(variant):
    """The decomposition alone, against the training step with the whole lstm and lstm_grad ops:
    the same numbers, one scan shared (stacked and Bidirectional LSTMs: test_kernels_recurrent_cells.py)."""
    assert_decomposed_step_equals_the_whole_ops(_lstm_model(variant)(), "lstm")


@pytest.mark.parametrize("variant", LSTM_VARIANTS[:3], ids=["default", "sequences", "backwards"])
def test_compiled_training_steps_match_the_reference(variant):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(_lstm_model(variant), x, y, steps=2)


def test_a_training_step_runs_the_recurrence_in_two_kernels():
    """Forward and backward of the LSTM: the projections are matmul kernels, the time loops one
    lstm_scan and one lstm_scan_grad launch each, not a launch per step."""
    model = _lstm_model({})()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    x = np.ones((2, TIME, FEATURES), "float32")
    model.train_on_batch(x, np.eye(3, dtype="float32")[[0, 1]])
    (step,) = model._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert templates.count("lstm_scan") == 1 and templates.count("lstm_scan_grad") == 1
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and "lstm" in i.node.op]


def test_larger_hidden_sizes_keep_the_whole_op():
    """(Other activations run the scans: test_kernels_recurrent_activations.py.)"""
    from kcomp.compiler import train_step_graph

    for layer in (kcomp.layers.LSTM(SCAN_TILED_MAX_UNITS + 1),):
        model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), layer, kcomp.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", backend="reference")
        decomposed, _ = run_pipeline(train_step_graph(model), passes=PIPELINE[:-1])
        ops = {n.op for n in decomposed.nodes}
        assert {"lstm", "lstm_grad"} <= ops and "lstm_scan" not in ops


def test_predict_runs_the_scan_with_its_unread_outputs_in_scratch():
    """In a forward graph the last c is often read by nothing: the kernel keeps only h (its
    binding says which outputs exist) and writes the rest to scratch."""
    model = kcomp.Sequential([kcomp.layers.Input(shape=(TIME, FEATURES)), kcomp.layers.LSTM(UNITS),
                              kcomp.layers.Dense(2)])
    run = assert_compiled_matches_reference(model, [torch.randn(BATCH, TIME, FEATURES)], kind="long", precision="ieee")
    (scan,) = [k for k in kernels_of(run.fused) if k.attrs["template"] == "lstm_scan"]
    assert len(scan.outputs) == 1


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [32, 64]  # on chip, and read every step; larger LSTMs are not decomposed (see test above)


def compile_cases(units_list, masked: bool = False, recurrent_masks: bool = False) -> list[dict]:
    """Both kernels compiled for sm_90 at each hidden size, with a step mask or without, with
    recurrent dropout masks or without: one record per kernel (the masked ones:
    test_kernels_recurrent_masks.py; with dropout masks: test_kernels_recurrent_dropout.py; the
    tiled: the hidden size picks)."""
    from aot_helpers import graph_kernel_records

    records = []
    for units in units_list:
        b = GraphBuilder("scan")
        xw = b.input(("N", 50, 4 * units), "float32", "xw")
        u = b.input((units, 4 * units), "float32", "recurrent")
        mask = [b.input(("N", 50), "float32", "mask")] if masked else []
        mask += [b.input(("N", 4, units), "float32", "recurrent_masks")] if recurrent_masks else []
        flags = dict(masked=masked, recurrent_masks=recurrent_masks)
        h_seq, c_seq, gates = b.emit("lstm_scan", [xw, u, *mask], save=True, **flags)
        dz = b.emit1("lstm_scan_grad", [u, c_seq, gates, *mask, h_seq], has_dseq=True, has_dh=False, has_dc=False,
                     **flags)
        records += graph_kernel_records(b.finish([h_seq, dz]), units=units)
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=300)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS for t in ("lstm_scan", "lstm_scan_grad")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
