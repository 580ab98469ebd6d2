"""The scan kernels with a mask (kernels/recurrent*.py, masked=True): each against its reference
under Triton's interpreter with pre-padded, post-padded, holed and fully masked rows, the scan
backward references against torch.autograd in float64, and the decomposed training step of masked
layers against the whole masked ops."""

from functools import partial

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import lstm_scan_grad_reference, lstm_scan_reference
from kernel_helpers import assert_compiled_matches_reference, kernels_of
from recurrent_cases import assert_compiled_step_runs_the_scans, assert_decomposed_step_equals_the_whole_ops, recurrent_model

BATCH, TIME, UNITS = 3, 7, 6  # ragged: no size a block size divides

MASKS = {  # (batch, time): one row per pattern, 1 = a step to read
    "pre-padded": [[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]],
    "post-padded": [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]],
    "holes": [[1, 0, 1, 1, 0, 1, 0], [0, 1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 1, 1]],
    "row-fully-masked": [[0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0], [1, 0, 1, 1, 1, 1, 0]],
}


def _mask(name, dtype=torch.float32):
    return torch.tensor(MASKS[name], dtype=dtype)


def _gradients(g, has, shapes, dtype=torch.float32):
    return [torch.randn(shape, generator=g, dtype=dtype) if present else None for present, shape in zip(has, shapes)]


# --- LSTM (on chip) -------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("save", [False, True])
def test_lstm_scan_kernel_with_a_mask_matches_the_reference(mask, save):
    b = GraphBuilder("scan")
    xw = b.input((BATCH, TIME, 4 * UNITS), "float32", "xw")
    u = b.input((UNITS, 4 * UNITS), "float32", "recurrent")
    m = b.input((BATCH, TIME), "float32", "mask")
    graph = b.finish(list(b.emit("lstm_scan", [xw, u, m], save=save, masked=True)))
    g = torch.Generator().manual_seed(3)
    inputs = [torch.randn(BATCH, TIME, 4 * UNITS, generator=g), torch.randn(UNITS, 4 * UNITS, generator=g) * 0.5,
              _mask(mask)]
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == ["lstm_scan"]
    h_seq = run.want[0]
    for row, steps in enumerate(MASKS[mask]):  # a masked step repeats the state before it (zeros at first)
        for t, read in enumerate(steps):
            if not read:
                before = h_seq[row, t - 1] if t else torch.zeros(UNITS)
                assert torch.equal(h_seq[row, t], before)


def _lstm_grad_inputs(g, mask, dtype, has):
    recurrent = torch.randn(UNITS, 4 * UNITS, generator=g, dtype=dtype) * 0.5
    xw = torch.randn(BATCH, TIME, 4 * UNITS, generator=g, dtype=dtype)
    grads = _gradients(g, has, ((BATCH, TIME, UNITS), (BATCH, UNITS), (BATCH, UNITS)), dtype)
    return xw, recurrent, _mask(mask, dtype), grads


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("has", [(True, True, True), (False, True, False), (True, False, False)])
def test_lstm_scan_grad_kernel_with_a_mask_matches_the_reference(mask, has):
    xw, recurrent, m, grads = _lstm_grad_inputs(torch.Generator().manual_seed(7), mask, torch.float32, has)
    _, cs, gates = lstm_scan_reference(xw, recurrent, m, save=True, masked=True)
    given = [v for v in grads if v is not None]
    b = GraphBuilder("scan_grad")
    names = ("recurrent", "c_seq", "gates", "mask", *(f"d{i}" for i in range(len(given))))
    vs = [b.input(tuple(v.shape), "float32", name) for v, name in zip((recurrent, cs, gates, m, *given), names)]
    graph = b.finish([b.emit1("lstm_scan_grad", vs, has_dseq=has[0], has_dh=has[1], has_dc=has[2], masked=True)])
    run = assert_compiled_matches_reference(graph, [recurrent, cs, gates, m, *given], kind="accumulating",
                                            precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == ["lstm_scan_grad"]


@pytest.mark.parametrize("mask", MASKS)
def test_lstm_scan_grad_reference_with_a_mask_is_autograd(mask):
    xw, recurrent, m, (d_seq, d_h, d_c) = _lstm_grad_inputs(torch.Generator().manual_seed(9), mask, torch.float64,
                                                            (True, True, True))
    xw.requires_grad_(True)
    h_seq, c_seq, gates = lstm_scan_reference(xw, recurrent, m, save=True, masked=True)
    ((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum() + (c_seq[:, -1] * d_c).sum()).backward()
    dz = lstm_scan_grad_reference(recurrent, c_seq.detach(), gates.detach(), m, d_seq, d_h, d_c, has_dseq=True,
                                  has_dh=True, has_dc=True, masked=True)
    torch.testing.assert_close(dz, xw.grad, rtol=1e-10, atol=1e-10)


# --- the decomposed training step of masked layers --------------------------------------------------

MASKED_VARIANTS = [dict(masking=True), dict(masking=True, go_backwards=True),
                   dict(masking=True, return_sequences=True, zero_output_for_mask=True),
                   dict(masking=True, return_sequences=True, go_backwards=True),
                   dict(masking=True, return_state=True, use_bias=False), dict(masking=True, bidirectional=True),
                   dict(masking=True, bidirectional=True, return_sequences=True)]


def _ids(variant):
    return "-".join(k for k in variant if k != "masking") or "default"


@pytest.mark.parametrize("variant", MASKED_VARIANTS, ids=_ids)
def test_decomposed_masked_lstm_step_equals_the_whole_ops(variant):
    layers = 2 if variant.get("bidirectional") else 1
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.LSTM, variant)(), "lstm",
                                                       layers=layers, padding=True)
    assert all(n.attrs["masked"] for n in step.nodes if n.op.startswith("lstm_scan"))


def _embedding_lstm(units=UNITS):
    kcomp.utils.set_random_seed(3)
    inp = kcomp.layers.Input(shape=(TIME,), dtype="int32")
    seq = kcomp.layers.Embedding(10, 5, mask_zero=True)(inp)
    return kcomp.Model(inp, kcomp.layers.Dense(3, activation="softmax")(kcomp.layers.LSTM(units)(seq)))


def assert_masked_embedding_step_runs_the_scans(units, scans):
    """Embedding(mask_zero=True) -> LSTM(units) -> Dense on triton-interpret, its ids pre-padded,
    post-padded, holed and all padding: the masked lstm runs as the two `scans` kernels (no coarse
    op), with the reference's losses and weights."""
    ids = np.array([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 0, 0, 0], [4, 0, 2, 9, 0, 3, 0], [0] * TIME], "int32")
    y = kcomp.utils.to_categorical(np.array([0, 1, 2, 1]), 3)
    assert_compiled_step_runs_the_scans(partial(_embedding_lstm, units), ids, y, scans)


def test_compiled_masked_training_step_runs_the_scans_and_matches_the_reference():
    assert_masked_embedding_step_runs_the_scans(UNITS, ("lstm_scan", "lstm_scan_grad"))


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [32, 64]  # the masked LSTM scans: tiles on chip, and read every step


@pytest.mark.slow
def test_masked_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=300)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS for t in ("lstm_scan", "lstm_scan_grad")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child
    from test_kernels_recurrent import compile_cases  # one graph of both scans, here with a mask

    answer_aot_child(compile_cases, masked=True)


def test_masked_steps_after_a_nan_state_output_zeros_as_keras_where():
    """zero_output_for_mask: a masked step's output is 0 even once the state is NaN (Keras's
    where(mask, output, 0)); the decomposed step zeroes it with zeros_where_masked, not a product
    with the mask, which gave NaN * 0 = NaN there."""
    kcomp.utils.set_random_seed(4)
    inp = kcomp.layers.Input(shape=(TIME, 4))
    seq = kcomp.layers.Masking(0.0)(inp)
    model = kcomp.Model(inp, kcomp.layers.LSTM(UNITS, return_sequences=True, zero_output_for_mask=True)(seq))
    x = torch.randn(BATCH, TIME, 4)
    x[:, 4:] = 0.0  # post-padded: steps 4.. masked
    x[0, 1, 0] = float("nan")  # row 0's state is NaN from step 1 on
    run = assert_compiled_matches_reference(model, [x], kind="long", precision="ieee")
    assert torch.isnan(run.got[0][0, 1:4]).all() and (run.got[0][:, 4:] == 0).all()
