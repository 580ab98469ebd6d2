"""The tiled LSTM recurrence kernels (kernels/recurrent_tiled.py), for hidden sizes above the
on-chip limit, under Triton's interpreter at small ragged sizes that still take the tiled path:
70 and 130 units in chunks of 32 or 16, so several output chunks and K-chunks run, the last
ones partial."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import SCAN_MAX_UNITS, SCAN_TILED_MAX_UNITS, lstm_scan_reference
from kcomp.kernels import recurrent_tiled
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE
from kernel_helpers import (assert_compiled_steps_match_the_reference, assert_launch_matches_reference, kernels_of,
                            with_nonfinite)
from recurrent_cases import assert_decomposed_step_equals_the_whole_ops
from test_kernels_recurrent import FEATURES, TIME as MODEL_TIME, _lstm_model
from tolerances import tolerance

BATCH, TIME = 3, 5
# (units, blocks): the interpreter's own (chunks of 32), and chunks of 16 units with K-chunks of 32;
# then the latter launched step by step (STEPWISE: a program per block of rows and units, a launch per
# step; the masked and recurrent-dropout tests launch 70 units stepwise)
CHUNKINGS = [(70, None), (130, dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=32, num_warps=4)),
             (130, dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=32, num_warps=4, STEPWISE=True))]
CHUNKING_IDS = ["70-blocks32", "130-blocks16x32", "130-stepwise-blocks16x32"]


def _scan_graph(units, save, outputs):
    b = GraphBuilder("scan")
    xw = b.input((BATCH, TIME, 4 * units), "float32", "xw")
    u = b.input((units, 4 * units), "float32", "recurrent")
    outs = b.emit("lstm_scan", [xw, u], save=save)
    return b.finish([outs[k] for k in outputs])


def _grad_graph(units, has_dseq, has_dh, has_dc):
    b = GraphBuilder("scan_grad")
    u = b.input((units, 4 * units), "float32", "recurrent")
    c_seq = b.input((BATCH, TIME, units), "float32", "c_seq")
    gates = b.input((BATCH, TIME, 4 * units), "float32", "gates")
    grads = [b.input(shape, "float32", name) for present, shape, name in
             ((has_dseq, (BATCH, TIME, units), "d_seq"), (has_dh, (BATCH, units), "d_h"),
              (has_dc, (BATCH, units), "d_c")) if present]
    return b.finish([b.emit1("lstm_scan_grad", [u, c_seq, gates, *grads], has_dseq=has_dseq, has_dh=has_dh,
                             has_dc=has_dc)])


def _only_kernel(graph, template):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == template
    return kernel


def _scan_inputs(units, seed):
    g = torch.Generator().manual_seed(seed)
    # U scaled so that h @ U is O(1) over `units` terms: the gates stay away from saturation
    return torch.randn(BATCH, TIME, 4 * units, generator=g), torch.randn(units, 4 * units, generator=g) / units ** 0.5


@pytest.mark.parametrize("units, config", CHUNKINGS, ids=CHUNKING_IDS)
@pytest.mark.parametrize("save, outputs", [(False, (0, 1)), (False, (0,)), (True, (0, 1, 2))],
                         ids=["last-c", "h-only", "saved"])
def test_scan_kernel_matches_the_reference(units, config, save, outputs):
    """Every output into a NaN-poisoned buffer (an element left unwritten fails); with h only,
    the last c (the running c the kernel updates in place) is scratch."""
    graph = _scan_graph(units, save, outputs)
    kernel = _only_kernel(graph, "lstm_scan_tiled")
    assert_launch_matches_reference(graph, kernel, list(_scan_inputs(units, units + len(outputs))),
                                    kind="accumulating", precision="ieee", config=config)


def test_scan_kernel_carries_nan_and_inf_as_the_reference():
    """NaN and +-inf in the projected inputs: a NaN spreads through h @ U to every unit of its row
    from the next step on, in the kernel's chunks as in the reference."""
    units, config = CHUNKINGS[1]
    graph = _scan_graph(units, True, (0, 1, 2))
    xw, recurrent = _scan_inputs(units, 9)
    assert_launch_matches_reference(graph, _only_kernel(graph, "lstm_scan_tiled"), [with_nonfinite(xw), recurrent],
                                    kind="accumulating", precision="ieee", config=config)


GRADIENTS = [(True, True, True), (True, False, False), (False, True, False), (False, False, True)]


@pytest.mark.parametrize("units, config", CHUNKINGS, ids=CHUNKING_IDS)
@pytest.mark.parametrize("has_dseq, has_dh, has_dc", GRADIENTS)
def test_scan_grad_kernel_matches_the_reference(units, config, has_dseq, has_dh, has_dc):
    graph = _grad_graph(units, has_dseq, has_dh, has_dc)
    kernel = _only_kernel(graph, "lstm_scan_grad_tiled")
    g = torch.Generator().manual_seed(units)
    xw, recurrent = _scan_inputs(units, 3)
    _, cs, gates = lstm_scan_reference(xw, recurrent, save=True)
    inputs = [recurrent, cs, gates, *(torch.randn(v.shape, generator=g) for v in graph.inputs[3:])]
    assert_launch_matches_reference(graph, kernel, inputs, kind="accumulating", precision="ieee", config=config)


@pytest.mark.parametrize("units, config", CHUNKINGS[1:], ids=CHUNKING_IDS[1:])
def test_scan_grad_kernel_is_autograd_through_the_scan_in_float64(units, config):
    """The kernel's dz (float32) against torch.autograd through the reference scan in float64: the
    gradient of sum(h_seq * d_seq) + sum(h_T * d_h) + sum(c_T * d_c) with respect to xw."""
    xw, recurrent = _scan_inputs(units, 5)
    g = torch.Generator().manual_seed(6)
    d_seq, d_h, d_c = torch.randn(BATCH, TIME, units, generator=g), *torch.randn(2, BATCH, units, generator=g)
    xw64 = xw.double().requires_grad_()
    h_seq, c_seq, _ = lstm_scan_reference(xw64, recurrent.double(), save=True)
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum() + (c_seq[:, -1] * d_c.double()).sum()).backward()
    _, cs, gates = lstm_scan_reference(xw, recurrent, save=True)
    binding = recurrent_tiled.LstmTiledScanGradBinding(kernel_id="test", recurrent=0, c_seq=1, gates=2, d_seq=3, d_h=4,
                                                       d_c=5)
    dz = recurrent_tiled.launch_scan_grad(binding, (recurrent, cs, gates, d_seq, d_h, d_c), config=config,
                                          precision="ieee")
    torch.testing.assert_close(dz, xw64.grad.float(), **tolerance("float32", "accumulating"))


def test_the_hidden_size_picks_the_template():
    """On chip up to SCAN_MAX_UNITS, tiled above it up to SCAN_TILED_MAX_UNITS (past that the
    lstm op stays whole: test_kernels_recurrent.py)."""
    for units, scan, grad in ((SCAN_MAX_UNITS, "lstm_scan", "lstm_scan_grad"),
                              (SCAN_MAX_UNITS + 1, "lstm_scan_tiled", "lstm_scan_grad_tiled"),
                              (SCAN_TILED_MAX_UNITS, "lstm_scan_tiled", "lstm_scan_grad_tiled")):
        _only_kernel(_scan_graph(units, True, (0, 1, 2)), scan)
        _only_kernel(_grad_graph(units, True, False, False), grad)


UNITS = 70  # the models' LSTM: tiled, in three chunks of the interpreter's 32


@pytest.mark.parametrize("variant", [dict(), dict(return_sequences=True, go_backwards=True, use_bias=False),
                                     dict(return_state=True)], ids=["default", "sequences-backwards-nobias", "state"])
def test_decomposed_training_step_equals_the_lstm_op(variant):
    """The decomposition of an LSTM(70) (before fusion), run by the reference interpreter, against
    the training step with the whole lstm and lstm_grad ops; fused, its scans are the tiled ones."""
    # O(1) products over 70 units (weights scaled by 1 / sqrt(fan-in)): the gates do not saturate
    decomposed = assert_decomposed_step_equals_the_whole_ops(_lstm_model(variant, UNITS)(), "lstm",
                                                             weight_scale=lambda shape: shape[0] ** -0.5 if shape else 1.0)
    templates = [k.attrs["template"] for k in kernels_of(run_pipeline(decomposed, passes=STEP_PIPELINE[-1:])[0])]
    assert templates.count("lstm_scan_tiled") == 1 and templates.count("lstm_scan_grad_tiled") == 1
    assert "lstm_scan" not in templates and "lstm_scan_grad" not in templates


def test_compiled_training_steps_match_the_reference():
    """Two Adam steps of an LSTM(70) model on the triton-interpret backend (its recurrence in the
    tiled kernels) and on the reference: the same losses, accuracies and weights."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, MODEL_TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(_lstm_model({}, UNITS), x, y, steps=2)


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [128, 256]


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=400)
    assert [(r["units"], r["template"]) for r in records] == \
        [(u, t) for u in AOT_UNITS for t in ("lstm_scan_tiled", "lstm_scan_grad_tiled")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child
    from test_kernels_recurrent import compile_cases  # the on-chip test's cases: the hidden size picks the template

    answer_aot_child(compile_cases)
