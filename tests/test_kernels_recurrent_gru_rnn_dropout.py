"""recurrent_dropout on the GRU and SimpleRNN scans (recurrent_masks=True), as
test_kernels_recurrent_dropout.py checks the LSTM's: each gate's h_{t-1} times its own mask
before its product (the GRU without reset_after: the candidate's r * h_{t-1} * m_h). The scan
kernels, on chip (6 units) and tiled (70 units: three chunks of the interpreter's 32), against
their references under Triton's interpreter, with and without a step mask; the scan backward
references against torch.autograd in float64; the decomposed gru / simple_rnn with dropout masks
against the whole ops; compiled training steps on triton-interpret against the reference
executor; the kernels AOT-compiled for sm_90 (slow). (The decomposed ops against Keras 3 and
autograd through Keras's cells written out: test_kernels_recurrent_dropout.py, for every cell.)"""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.ops.recurrent_scan_gru import gru_scan_grad_reference, gru_scan_reference
from kcomp.ir.ops.recurrent_scan_simple_rnn import simple_rnn_scan_grad_reference, simple_rnn_scan_reference
from kernel_helpers import assert_launch_matches_reference, with_nonfinite
from recurrent_cases import (
    FEATURES, assert_compiled_step_runs_the_scans, assert_decomposed_step_equals_the_whole_ops, recurrent_model,
)
from test_kernels_recurrent_dropout import DROPOUT, _graph
from test_kernels_recurrent_masks import TIME, _mask
from test_kernels_recurrent_tiled import _only_kernel
from test_kernels_recurrent_tiled_masks import BATCH

RECURRENT_RATE = 0.3
# (op, its attributes, gates): the GRU both ways round and SimpleRNN
CELLS = [("gru", dict(reset_after=True), 3), ("gru", dict(reset_after=False), 3),
         ("simple_rnn", dict(activation="tanh"), 1)]
CELL_IDS = ["gru", "gru-reset-before", "simple-rnn"]
SIZES = [(6, ""), (70, "_tiled")]  # on chip; tiled (the template names' suffix)
SIZE_IDS = ["on-chip", "tiled"]
REFERENCES = {"gru": (gru_scan_reference, gru_scan_grad_reference),
              "simple_rnn": (simple_rnn_scan_reference, simple_rnn_scan_grad_reference)}


def _gate_masks(gates, units, seed, dtype=torch.float32):
    """(batch, gates, units): 0 or 1 / (1 - rate), as Keras draws them."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(BATCH, gates, units, generator=g) >= RECURRENT_RATE).to(dtype) / (1 - RECURRENT_RATE)


def _scan_inputs(cell, attrs, gates, units, seed, dtype=torch.float32, nonfinite=False):
    """xw (nonfinite: with NaN, +inf, -inf), U (scaled so that h @ U stays O(1)) and, for a GRU with
    reset_after, the recurrent bias."""
    g = torch.Generator().manual_seed(seed)
    bias = [torch.randn(3 * units, generator=g, dtype=dtype)] if attrs.get("reset_after") else []
    xw = torch.randn(BATCH, TIME, gates * units, generator=g, dtype=dtype)
    return [with_nonfinite(xw) if nonfinite else xw,
            torch.randn(units, gates * units, generator=g, dtype=dtype) / units ** 0.5, *bias]


def _forward(cell, attrs, inputs, masked, recurrent_masks=True):
    """The scan reference's outputs (with save=True, a GRU's: every h_t and what it saved)."""
    save = {"save": True} if cell == "gru" else {}
    outs = REFERENCES[cell][0](*inputs, masked=masked, recurrent_masks=recurrent_masks, **attrs, **save)
    return list(outs) if cell == "gru" else [outs]


def _grad_inputs(cell, attrs, gates, units, step_mask, has, seed, dtype=torch.float32, nonfinite=False):
    """A scan gradient's inputs (U, the forward's outputs, the masks, the gradients present) and the
    forward's inputs (_scan_inputs')."""
    forward_inputs = _scan_inputs(cell, attrs, gates, units, seed, dtype, nonfinite)
    gate_masks = _gate_masks(gates, units, seed + 1, dtype)
    outs = _forward(cell, attrs, [*forward_inputs, *step_mask, gate_masks], bool(step_mask))
    g = torch.Generator().manual_seed(seed + 2)
    grads = [torch.randn(shape, generator=g, dtype=dtype)
             for present, shape in zip(has, ((BATCH, TIME, units), (BATCH, units))) if present]
    return [forward_inputs[1], *outs, *step_mask, gate_masks, *grads], forward_inputs


@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("cell, attrs, gates", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("mask", [None, "holes"])
def test_scan_kernel_with_recurrent_masks_matches_the_reference(units, suffix, cell, attrs, gates, mask):
    step_mask = [_mask(mask)] if mask else []
    inputs = [*_scan_inputs(cell, attrs, gates, units, 1), *step_mask, _gate_masks(gates, units, 2)]
    _assert_scan_kernel(cell, attrs, suffix, inputs, bool(mask))
    plain = _forward(cell, attrs, inputs[:-1], bool(mask), recurrent_masks=False)
    assert not torch.allclose(plain[0], _forward(cell, attrs, inputs, bool(mask))[0])  # the masks count


@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("cell, attrs, gates", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("has, mask", [((True, True), None), ((False, True), "row-fully-masked")],
                         ids=["all", "last-h-masked"])
def test_scan_grad_kernel_with_recurrent_masks_matches_the_reference(units, suffix, cell, attrs, gates, has, mask):
    step_mask = [_mask(mask)] if mask else []
    inputs, _ = _grad_inputs(cell, attrs, gates, units, step_mask, has, seed=3)
    _assert_scan_grad_kernel(cell, attrs, suffix, inputs, has, bool(mask))


def _assert_scan_kernel(cell, attrs, suffix, inputs, masked):
    """The forward scan with recurrent masks, launched alone (the `suffix` template) into poisoned
    outputs, against its reference."""
    save = {"save": True} if cell == "gru" else {}
    graph = _graph("scan", f"{cell}_scan", inputs, masked=masked, recurrent_masks=True, **attrs, **save)
    assert_launch_matches_reference(graph, _only_kernel(graph, f"{cell}_scan{suffix}"), inputs, kind="accumulating",
                                    precision="ieee")


def _assert_scan_grad_kernel(cell, attrs, suffix, inputs, has, masked):
    """As _assert_scan_kernel, the scan backward given the gradients `has` says (d_seq, d_h)."""
    graph = _graph("scan_grad", f"{cell}_scan_grad", inputs, has_dseq=has[0], has_dh=has[1], masked=masked,
                   recurrent_masks=True, **attrs)
    assert_launch_matches_reference(graph, _only_kernel(graph, f"{cell}_scan_grad{suffix}"), inputs,
                                    kind="accumulating", precision="ieee")


@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("cell, attrs, gates", CELLS, ids=CELL_IDS)
def test_scans_with_recurrent_masks_carry_nan_and_inf_as_the_reference(units, suffix, cell, attrs, gates):
    """NaN and +-inf in xw, with a holed step mask: a unit the recurrent mask drops of a NaN h is
    NaN * 0 = NaN in the product, as torch's; forward and backward."""
    step_mask = [_mask("holes")]
    inputs, forward_inputs = _grad_inputs(cell, attrs, gates, units, step_mask, (True, True), seed=9, nonfinite=True)
    assert not forward_inputs[0].isfinite().all() and not inputs[1].isfinite().all()  # h_seq holds NaN
    _assert_scan_kernel(cell, attrs, suffix, [*forward_inputs, *step_mask, inputs[-3]], True)
    _assert_scan_grad_kernel(cell, attrs, suffix, inputs, (True, True), True)


@pytest.mark.parametrize("cell, attrs, gates", CELLS, ids=CELL_IDS)
def test_scan_grad_reference_with_recurrent_masks_is_autograd_in_float64(cell, attrs, gates):
    """The gradient of xw (and, reset_after, of the recurrent product h_prev @ U + b: the recurrent
    bias's gradient is its sum) against torch.autograd through the forward reference."""
    units, step_mask = 6, [_mask("holes", torch.float64)]
    inputs, forward_inputs = _grad_inputs(cell, attrs, gates, units, step_mask, (True, True), 6, torch.float64)
    d_seq, d_h = inputs[-2:]
    leaves = [t.requires_grad_(True) for t in (forward_inputs[0], *forward_inputs[2:])]
    h_seq = _forward(cell, attrs, [*forward_inputs, *step_mask, inputs[-3]], True)[0]
    expected = torch.autograd.grad((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum(), leaves)
    ours = REFERENCES[cell][1](*inputs, has_dseq=True, has_dh=True, masked=True, recurrent_masks=True, **attrs)
    ours = list(ours) if isinstance(ours, tuple) else [ours]
    ours[1:] = [o.sum(dim=(0, 1)) for o in ours[1:]]  # the recurrent bias's: the sum of the product's gradient
    for mine, theirs in zip(ours, expected, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


# --- the decomposition of a gru / simple_rnn with dropout masks ------------------------------------

LAYERS = {"gru": kcomp.layers.GRU, "simple_rnn": kcomp.layers.SimpleRNN}
VARIANTS = [("gru", dict()), ("gru", dict(reset_after=False, return_sequences=True, go_backwards=True)),
            ("gru", dict(reset_after=False, use_bias=False, return_state=True)),
            ("gru", dict(use_bias=False, masking=True, return_sequences=True, zero_output_for_mask=True)),
            ("gru", dict(stacked=True, go_backwards=True)),
            ("simple_rnn", dict()), ("simple_rnn", dict(activation="relu", return_sequences=True, go_backwards=True)),
            ("simple_rnn", dict(masking=True, use_bias=False, return_state=True)),
            ("gru", dict(bidirectional=True, reset_after=False)), ("simple_rnn", dict(bidirectional=True))]
VARIANT_IDS = ["gru", "gru-reset-before-sequences-backwards", "gru-reset-before-nobias-state",
               "gru-nobias-masked-zero-output", "gru-stacked-backwards", "simple-rnn", "simple-rnn-relu-backwards",
               "simple-rnn-masked-nobias-state", "gru-reset-before-bidirectional", "simple-rnn-bidirectional"]


@pytest.mark.parametrize("cell, variant", VARIANTS, ids=VARIANT_IDS)
def test_decomposed_training_step_equals_the_whole_ops(cell, variant):
    """The decomposition alone (before fusion) against the step with the coarse ops, on the
    reference executor: the masks are the step's own Philox draws, the same in both; a large
    learning rate shows a wrong gradient in the updated weights (stacked: the d x of the layer
    with dropout reaches the layer below; bidirectional: both directions with dropout masks)."""
    layers = 2 if variant.get("stacked") or variant.get("bidirectional") else 1
    model = recurrent_model(LAYERS[cell], {**DROPOUT, **variant})()
    step = assert_decomposed_step_equals_the_whole_ops(model, cell, layers=layers, padding=bool(variant.get("masking")))
    flags = [n.attrs["recurrent_masks"] for n in step.nodes if n.op.startswith(f"{cell}_scan")]
    assert flags.count(True) == (4 if variant.get("bidirectional") else 2) and len(flags) == 2 * layers


@pytest.mark.parametrize("cell", ["gru", "simple_rnn"])
@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
def test_compiled_dropout_training_steps_run_the_scans_and_match_the_reference(cell, units, suffix):
    """GRU / SimpleRNN(dropout=0.2, recurrent_dropout=0.3): two Adam steps on triton-interpret and on
    the reference executor, the same masks: the same losses and weights, the recurrence in the two
    scan kernels, no coarse op."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    scans = (f"{cell}_scan{suffix}", f"{cell}_scan_grad{suffix}")
    assert_compiled_step_runs_the_scans(recurrent_model(LAYERS[cell], DROPOUT, units), x, y, scans)


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

# on chip (tiles loaded once, and read every step), tiled (70: no size 16 divides, unvectorized
# loads, the most registers)
AOT_UNITS = [32, 64, 70, 128]


def _aot_templates(units):
    suffix = "_tiled" if units > 64 else ""
    return [*(f"gru_scan{suffix}", f"gru_scan_grad{suffix}") * 2, f"simple_rnn_scan{suffix}",
            f"simple_rnn_scan_grad{suffix}"]


def compile_cases(units_list) -> list[dict]:
    """With a step mask and recurrent dropout masks both: the GRU's scans with reset_after, then
    without, then SimpleRNN's; one record per kernel."""
    from aot_helpers import graph_kernel_records
    from kcomp.ir.builder import GraphBuilder
    from test_kernels_recurrent_cells import emit_gru_scans

    records = []
    for units in units_list:
        b = GraphBuilder("scans")
        outputs = emit_gru_scans(b, units, masked=True, recurrent_masks=True)
        xw, u = b.input(("N", 50, units), "float32", "xw"), b.input((units, units), "float32", "recurrent")
        masks = [b.input(("N", 50), "float32", "mask"), b.input(("N", 1, units), "float32", "recurrent_masks")]
        h_seq = b.emit1("simple_rnn_scan", [xw, u, *masks], masked=True, recurrent_masks=True)
        outputs += [h_seq, b.emit1("simple_rnn_scan_grad", [u, h_seq, *masks, h_seq], has_dseq=True, has_dh=False,
                                   masked=True, recurrent_masks=True)]
        records += graph_kernel_records(b.finish(outputs), units=units)
    return records


@pytest.mark.slow
def test_kernels_with_recurrent_masks_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import assert_compiled_without_spills

    assert_compiled_without_spills(__file__, AOT_UNITS, _aot_templates, tmp_path, timeout=600)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
