"""recurrent_dropout on the LSTM scans (recurrent_masks=True): each gate's h_{t-1} times its own
mask before its product. The scan kernels, on chip (6 units) and tiled (70 units: three chunks of
the interpreter's 32), against their references under Triton's interpreter, with and without a
step mask; the scan backward reference against torch.autograd in float64; and the decomposed
lstm / lstm_grad with dropout masks (kcomp/passes/decompose_recurrent.py) against the coarse
ops and, compiled, on triton-interpret against the reference executor; every cell's decomposed
op and grad op (the GRU's and SimpleRNN's scans: test_kernels_recurrent_gru_rnn_dropout.py)
against Keras 3 and against torch.autograd through Keras's cells written out."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import lstm_scan_grad_reference, lstm_scan_reference
from kcomp.kernels import recurrent_tiled
from kcomp.passes import run_pipeline
from kernel_helpers import assert_launch_matches_reference
from recurrent_cases import FEATURES, assert_compiled_step_runs_the_scans, assert_decomposed_step_equals_the_whole_ops, \
    recurrent_model
from test_kernels_recurrent_masks import TIME, _mask
from test_kernels_recurrent_tiled import _only_kernel
from test_kernels_recurrent_tiled_masks import BATCH, scan_inputs as _scan_inputs
from test_recurrent_dropout import CELL_IDS, CELLS, autograd_case

SIZES = [(6, "lstm_scan", "lstm_scan_grad"), (70, "lstm_scan_tiled", "lstm_scan_grad_tiled")]
SIZE_IDS = ["on-chip", "tiled"]
RECURRENT_RATE = 0.3


def _gate_masks(units, seed, dtype=torch.float32):
    """(batch, 4, units): 0 or 1 / (1 - rate), as Keras draws them."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(BATCH, 4, units, generator=g) >= RECURRENT_RATE).to(dtype) / (1 - RECURRENT_RATE)


def _graph(name, op, values, **attrs):
    b = GraphBuilder(name)
    vs = [b.input(tuple(v.shape), "float32", f"in{i}") for i, v in enumerate(values)]
    return b.finish(list(b.emit(op, vs, **attrs)))


# SIZES with the block config each launch gets: its own (None), and the tiled scans launched step by
# step (STEPWISE) as well
LAUNCHES = [(*size, None) for size in SIZES] + [(*SIZES[1], dict(recurrent_tiled.INTERPRETER_BLOCKS, STEPWISE=True))]
LAUNCH_IDS = [*SIZE_IDS, "tiled-stepwise"]


@pytest.mark.parametrize("units, scan, _, config", LAUNCHES, ids=LAUNCH_IDS)
@pytest.mark.parametrize("save", [False, True])
@pytest.mark.parametrize("mask", [None, "holes"])
def test_scan_kernel_with_recurrent_masks_matches_the_reference(units, scan, _, config, save, mask):
    inputs = [*_scan_inputs(units, 1), *([_mask(mask)] if mask else []), _gate_masks(units, 2)]
    graph = _graph("scan", "lstm_scan", inputs, save=save, masked=mask is not None, recurrent_masks=True)
    assert_launch_matches_reference(graph, _only_kernel(graph, scan), inputs, kind="accumulating", precision="ieee",
                                    config=config)
    plain = lstm_scan_reference(*inputs[:-1], save=save, masked=mask is not None)
    assert not torch.allclose(plain[0], lstm_scan_reference(*inputs, save=save, masked=mask is not None,
                                                            recurrent_masks=True)[0])  # the masks count


@pytest.mark.parametrize("units, _, grad, config", LAUNCHES, ids=LAUNCH_IDS)
@pytest.mark.parametrize("has", [(True, True, True), (False, True, False)], ids=["all", "last-h"])
@pytest.mark.parametrize("mask", [None, "row-fully-masked"])
def test_scan_grad_kernel_with_recurrent_masks_matches_the_reference(units, _, grad, config, has, mask):
    xw, recurrent = _scan_inputs(units, 3)
    step_mask = [_mask(mask)] if mask else []
    gate_masks = _gate_masks(units, 4)
    _, cs, gates = lstm_scan_reference(xw, recurrent, *step_mask, gate_masks, save=True, masked=bool(mask),
                                       recurrent_masks=True)
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(shape, generator=g) for present, shape in
             zip(has, ((BATCH, TIME, units), (BATCH, units), (BATCH, units))) if present]
    inputs = [recurrent, cs, gates, *step_mask, gate_masks, *grads]
    graph = _graph("scan_grad", "lstm_scan_grad", inputs, has_dseq=has[0], has_dh=has[1], has_dc=has[2],
                   masked=bool(mask), recurrent_masks=True)
    assert_launch_matches_reference(graph, _only_kernel(graph, grad), inputs, kind="accumulating", precision="ieee",
                                    config=config)


def test_scan_grad_reference_with_recurrent_masks_is_autograd_in_float64():
    units = 6
    xw, recurrent = _scan_inputs(units, 6, torch.float64)
    gate_masks, m = _gate_masks(units, 7, torch.float64), _mask("holes", torch.float64)
    g = torch.Generator().manual_seed(8)
    d_seq, d_h, d_c = (torch.randn(shape, generator=g, dtype=torch.float64)
                       for shape in ((BATCH, TIME, units), (BATCH, units), (BATCH, units)))
    xw.requires_grad_(True)
    h_seq, c_seq, gates = lstm_scan_reference(xw, recurrent, m, gate_masks, save=True, masked=True,
                                              recurrent_masks=True)
    ((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum() + (c_seq[:, -1] * d_c).sum()).backward()
    dz = lstm_scan_grad_reference(recurrent, c_seq.detach(), gates.detach(), m, gate_masks, d_seq, d_h, d_c,
                                  has_dseq=True, has_dh=True, has_dc=True, masked=True, recurrent_masks=True)
    torch.testing.assert_close(dz, xw.grad, rtol=1e-10, atol=1e-10)



# --- the decomposition of an lstm with dropout masks ------------------------------------------------

DROPOUT = dict(dropout=0.2, recurrent_dropout=0.3)
VARIANTS = [dict(), dict(return_sequences=True, go_backwards=True, use_bias=False), dict(return_state=True),
            dict(masking=True, return_sequences=True, zero_output_for_mask=True), dict(stacked=True, go_backwards=True)]
VARIANT_IDS = ["default", "sequences-backwards-nobias", "state", "masked-zero-output", "stacked-backwards"]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_decomposed_training_step_equals_the_whole_ops(variant):
    """The decomposition alone (before fusion) against the step with the coarse lstm and lstm_grad
    ops, run by the reference interpreter: the masks are the step's own Philox draws, the same in
    both; a large learning rate shows a wrong gradient in the updated weights (stacked: the d x of
    the LSTM with dropout, under a plain one, reaches that one's weights)."""
    layers = 2 if variant.get("stacked") else 1
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.LSTM, {**DROPOUT, **variant})(),
                                                       "lstm", layers=layers, padding=bool(variant.get("masking")))
    flags = [n.attrs["recurrent_masks"] for n in step.nodes if n.op.startswith("lstm_scan")]
    assert flags.count(True) == 2 and len(flags) == 2 * layers


@pytest.mark.parametrize("units, scans", [(6, ("lstm_scan", "lstm_scan_grad")),
                                          (70, ("lstm_scan_tiled", "lstm_scan_grad_tiled"))], ids=SIZE_IDS)
def test_compiled_dropout_training_steps_run_the_scans_and_match_the_reference(units, scans):
    """LSTM(dropout=0.2, recurrent_dropout=0.3): two Adam steps on triton-interpret and on the
    reference executor, the same masks (Philox draws both make alike): the same losses and
    weights, the recurrence in the two scan kernels, no coarse lstm op."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_step_runs_the_scans(recurrent_model(kcomp.layers.LSTM, DROPOUT, units), x, y, scans)


# --- the decomposed ops (every cell's) against Keras 3 and torch.autograd, the masks given ---------


def _decomposed(op, shapes, **attrs):
    """A graph of one `op` node (dropout_masks=True) over float32 inputs of `shapes`, decomposed
    (no coarse op left: its cell's scan instead)."""
    from kcomp.ir.registry import OPS
    from kcomp.passes.pipeline import PIPELINE

    b = GraphBuilder(op)
    vs = [b.input(shape, "float32", f"in{i}") for i, shape in enumerate(shapes)]
    graph = b.finish(list(b.emit(op, vs, **OPS[op].resolve_attrs({"dropout_masks": True, **attrs}))))
    decomposed, _ = run_pipeline(graph, passes=PIPELINE[:-1])
    ops = {n.op for n in decomposed.nodes}
    assert op not in ops and f"{op.removesuffix('_grad')}_scan" in ops
    return decomposed


@pytest.mark.parametrize("cell, extra", CELLS, ids=CELL_IDS)
@pytest.mark.parametrize("flags", [dict(), dict(return_sequences=True, go_backwards=True)],
                         ids=["last", "sequences-backwards"])
def test_the_decomposed_op_gives_keras_numbers_with_the_same_masks(cell, extra, flags):
    """Each cell's decomposition (the LSTM's here, the GRU's and SimpleRNN's:
    test_kernels_recurrent_gru_rnn_dropout.py) on the reference executor against Keras 3."""
    from kcomp.runtime.reference import run_reference
    from test_recurrent_dropout import _keras_forward, _keras_layer, _masks, _op_inputs

    layer = _keras_layer(cell, extra, flags, "float32")
    masks = _masks(cell, seed=1)
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(BATCH, TIME, FEATURES)), dtype=torch.float32)
    theirs = _keras_forward(layer, cell, x, masks)
    inputs = _op_inputs(layer, x, masks, torch.float32)
    ours = run_reference(_decomposed(cell, [tuple(t.shape) for t in inputs], **extra, **flags), inputs, {})
    torch.testing.assert_close(ours[0], theirs[0].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell, extra", CELLS, ids=CELL_IDS)
def test_the_decomposed_grad_is_autograd_through_keras_cells_written_out(cell, extra):
    """d x, d kernel, d recurrent, d bias of the output sequence (float32, the decomposition on the
    reference executor) against torch.autograd through test_recurrent_dropout's cells written out
    in float64, the same masks."""
    from kcomp.runtime.reference import run_reference

    leaves, masks, d_out, expected = autograd_case(cell, extra)
    inputs = [t.detach().float() for t in (*leaves, *masks, d_out)]
    graph = _decomposed(f"{cell}_grad", [tuple(t.shape) for t in inputs], return_sequences=True, grad_outputs=(0,),
                        **extra)
    for mine, theirs in zip(run_reference(graph, inputs, {}), expected, strict=True):
        torch.testing.assert_close(mine, theirs.float(), rtol=1e-4, atol=1e-5)


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

TILED = ("lstm_scan_tiled", "lstm_scan_grad_tiled")
AOT_CASES = [(32, ("lstm_scan", "lstm_scan_grad")), (64, ("lstm_scan", "lstm_scan_grad")), (70, TILED), (128, TILED),
             (256, TILED)]  # 70: no size 16 divides (unvectorized loads, the most registers)


@pytest.mark.slow
def test_kernels_with_recurrent_masks_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    """With a step mask and recurrent dropout masks both: on chip (tiles loaded once, and read every
    step) and tiled."""
    from aot_helpers import assert_compiled_without_spills

    assert_compiled_without_spills(__file__, [u for u, _ in AOT_CASES], dict(AOT_CASES).get, tmp_path, timeout=500)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child
    from test_kernels_recurrent import compile_cases

    answer_aot_child(compile_cases, masked=True, recurrent_masks=True)
