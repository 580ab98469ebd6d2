"""The tiled SimpleRNN recurrence kernels (kernels/recurrent_tiled_simple_rnn.py), for hidden sizes
above the on-chip limit, under Triton's interpreter at small ragged sizes that still take the
tiled path: 70 units in chunks of 32, and 100 in chunks of 16 with K-chunks of 32, so several
output chunks and K-chunks run, the last ones partial; with and without a step mask. Its AOT
test compiles the scans at 32 and 64 units too (the on-chip ones, masked and not) as well as
the tiled ones at 128 and 256."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import SCAN_TILED_MAX_UNITS
from kcomp.ir.ops.recurrent_scan_simple_rnn import SIMPLE_RNN_SCAN_MAX_UNITS, simple_rnn_scan_reference
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import PIPELINE, STEP_PIPELINE
from kernel_helpers import (assert_compiled_steps_match_the_reference, assert_launch_matches_reference, kernels_of,
                            launch_kernel, with_nonfinite)
from recurrent_cases import FEATURES, TIME as MODEL_TIME, assert_decomposed_step_equals_the_whole_ops, recurrent_model
from tolerances import tolerance

BATCH, TIME = 3, 5
MASK = [[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 1, 1]]  # holes, a fully masked row, pre-padded
# (units, blocks): the interpreter's own (chunks of 32), and chunks of 16 units with K-chunks of 32
CHUNKINGS = [pytest.param(70, None, id="70-blocks32"),
             pytest.param(100, dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=32, num_warps=4), id="100-blocks16x32")]


def _mask():
    return torch.tensor(MASK, dtype=torch.float32)


def _scan_graph(units, activation, masked):
    b = GraphBuilder("scan")
    xw, u = b.input((BATCH, TIME, units), "float32", "xw"), b.input((units, units), "float32", "recurrent")
    mask = [b.input((BATCH, TIME), "float32", "mask")] if masked else []
    return b.finish([b.emit1("simple_rnn_scan", [xw, u, *mask], activation=activation, masked=masked)])


def _grad_graph(units, activation, masked, has_dseq, has_dh):
    b = GraphBuilder("scan_grad")
    u, h_seq = b.input((units, units), "float32", "recurrent"), b.input((BATCH, TIME, units), "float32", "h_seq")
    mask = [b.input((BATCH, TIME), "float32", "mask")] if masked else []
    grads = [b.input(shape, "float32", name) for present, shape, name in
             ((has_dseq, (BATCH, TIME, units), "d_seq"), (has_dh, (BATCH, units), "d_h")) if present]
    return b.finish([b.emit1("simple_rnn_scan_grad", [u, h_seq, *mask, *grads], activation=activation,
                             has_dseq=has_dseq, has_dh=has_dh, masked=masked)])


def _only_kernel(graph, template):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == template
    return kernel


def _scan_inputs(units, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # U scaled by units ** -0.5: h @ U is O(1) over `units` terms, the state neither dies nor saturates
    return (torch.randn(BATCH, TIME, units, generator=g, dtype=dtype),
            torch.randn(units, units, generator=g, dtype=dtype) * units ** -0.5)


@pytest.mark.parametrize("units, config", CHUNKINGS)
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_scan_kernel_matches_the_reference(units, config, activation, masked):
    """Into a NaN-poisoned buffer: an element left unwritten fails."""
    graph = _scan_graph(units, activation, masked)
    inputs = [*_scan_inputs(units, units), *([_mask()] if masked else [])]
    assert_launch_matches_reference(graph, _only_kernel(graph, "simple_rnn_scan_tiled"), inputs, kind="accumulating",
                                    precision="ieee", config=config)


def test_scan_kernel_carries_nan_and_inf_as_the_reference():
    """NaN and +-inf in the projected inputs spread through h @ U to every unit of their row from
    the next step on, in the kernel's chunks as in the reference (relu: the NaN is kept)."""
    for activation in ("tanh", "relu"):
        graph = _scan_graph(100, activation, True)
        xw, recurrent = _scan_inputs(100, 9)
        assert_launch_matches_reference(graph, _only_kernel(graph, "simple_rnn_scan_tiled"),
                                        [with_nonfinite(xw), recurrent, _mask()], kind="accumulating",
                                        precision="ieee", config=CHUNKINGS[1].values[1])


@pytest.mark.parametrize("units, config", CHUNKINGS)
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("has_dseq, has_dh, activation", [(True, True, "tanh"), (True, False, "relu"),
                                                          (False, True, "relu")])
def test_scan_grad_kernel_matches_the_reference(units, config, masked, has_dseq, has_dh, activation):
    graph = _grad_graph(units, activation, masked, has_dseq, has_dh)
    mask = [_mask()] if masked else []
    xw, recurrent = _scan_inputs(units, 3)
    h_seq = simple_rnn_scan_reference(xw, recurrent, *mask, activation=activation, masked=masked)
    g = torch.Generator().manual_seed(units)
    grads = [torch.randn(v.shape, generator=g) for v in graph.inputs[2 + len(mask):]]
    assert_launch_matches_reference(graph, _only_kernel(graph, "simple_rnn_scan_grad_tiled"),
                                    [recurrent, h_seq, *mask, *grads], kind="accumulating", precision="ieee",
                                    config=config)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_masked_scan_grad_kernel_is_autograd_through_the_scan_in_float64(activation):
    """The kernel's dz (float32) against torch.autograd through the reference scan in float64: the
    gradient of sum(h_seq * d_seq) + sum(h_T * d_h) with respect to xw, with the mask."""
    units = 100
    xw, recurrent = _scan_inputs(units, 5, torch.float64)
    g = torch.Generator().manual_seed(6)
    d_seq, d_h = torch.randn(BATCH, TIME, units, generator=g), torch.randn(BATCH, units, generator=g)
    mask = _mask()
    xw.requires_grad_()
    h_seq = simple_rnn_scan_reference(xw, recurrent, mask.double(), activation=activation, masked=True)
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum()).backward()
    graph = _grad_graph(units, activation, True, True, True)  # the generated module: its activation's hooks
    (dz,), _ = launch_kernel(graph, _only_kernel(graph, "simple_rnn_scan_grad_tiled"),
                             [recurrent.float(), h_seq.detach().float(), mask, d_seq, d_h],
                             config=CHUNKINGS[1].values[1], precision="ieee")
    torch.testing.assert_close(dz, xw.grad.float(), **tolerance("float32", "accumulating"))


def test_the_hidden_size_picks_the_template():
    """On chip up to SIMPLE_RNN_SCAN_MAX_UNITS, tiled above it up to SCAN_TILED_MAX_UNITS; past that
    the simple_rnn op stays whole (test_kernels_recurrent_cells.py)."""
    for units, scan, grad in ((SIMPLE_RNN_SCAN_MAX_UNITS, "simple_rnn_scan", "simple_rnn_scan_grad"),
                              (SIMPLE_RNN_SCAN_MAX_UNITS + 1, "simple_rnn_scan_tiled", "simple_rnn_scan_grad_tiled"),
                              (SCAN_TILED_MAX_UNITS, "simple_rnn_scan_tiled", "simple_rnn_scan_grad_tiled")):
        _only_kernel(_scan_graph(units, "tanh", True), scan)
        _only_kernel(_grad_graph(units, "tanh", True, True, False), grad)


def test_the_decompose_pass_keeps_simple_rnns_past_the_tiled_limit_whole():
    from kcomp.compiler import train_step_graph

    for units, whole in ((SCAN_TILED_MAX_UNITS, False), (SCAN_TILED_MAX_UNITS + 1, True)):
        model = kcomp.Sequential([kcomp.layers.Input(shape=(3, 2)), kcomp.layers.SimpleRNN(units), kcomp.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse", backend="reference")
        ops = {n.op for n in run_pipeline(train_step_graph(model), passes=PIPELINE[:-1])[0].nodes}
        assert ({"simple_rnn", "simple_rnn_grad"} <= ops) == whole and ("simple_rnn_scan" in ops) != whole, ops


UNITS = 70  # the models' SimpleRNN: tiled, in three chunks of the interpreter's 32


def _scaled(shape):
    return shape[0] ** -0.5 if shape else 1.0  # O(1) products over 70 units


@pytest.mark.parametrize("variant", [dict(), dict(activation="relu", return_sequences=True, go_backwards=True),
                                     dict(masking=True, return_sequences=True, zero_output_for_mask=True),
                                     dict(masking=True, go_backwards=True, use_bias=False, return_state=True)],
                         ids=["default", "relu-sequences-backwards", "masked-sequences-zeros",
                              "masked-backwards-nobias-state"])
def test_decomposed_training_step_equals_the_simple_rnn_op(variant):
    """The decomposition of a SimpleRNN(70) (before fusion), run by the reference interpreter,
    against the training step with the whole simple_rnn ops; fused, its scans are the tiled ones."""
    decomposed = assert_decomposed_step_equals_the_whole_ops(
        recurrent_model(kcomp.layers.SimpleRNN, variant, UNITS)(), "simple_rnn", weight_scale=_scaled,
        padding=bool(variant.get("masking")))
    templates = [k.attrs["template"] for k in kernels_of(run_pipeline(decomposed, passes=STEP_PIPELINE[-1:])[0])]
    assert templates.count("simple_rnn_scan_tiled") == 1 and templates.count("simple_rnn_scan_grad_tiled") == 1
    assert "simple_rnn_scan" not in templates and "simple_rnn_scan_grad" not in templates


@pytest.mark.parametrize("masking", [False, True], ids=["unmasked", "masked"])
def test_compiled_training_steps_match_the_reference(masking):
    """Two Adam steps of a SimpleRNN(70) model on the triton-interpret backend (its recurrence in
    the tiled kernels) and on the reference: the same losses, accuracies and weights."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, MODEL_TIME, FEATURES)).astype("float32")
    x[0, :2] = x[1, 5:] = x[3] = 0.0  # masked by Masking(0.0): pre-, post-padded, every step
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(
        recurrent_model(kcomp.layers.SimpleRNN, dict(masking=masking, return_sequences=True), UNITS), x, y, steps=2)


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [32, 64, 128, 256]  # the hidden size picks the template: on chip up to 64 (the masked ones here), tiled above


def _aot_templates(units: int) -> list[str]:
    """The kernels compile_cases builds at `units`: forward and backward without a mask, then with one."""
    suffix = "_tiled" if units > SIMPLE_RNN_SCAN_MAX_UNITS else ""
    return [f"simple_rnn_scan{suffix}", f"simple_rnn_scan_grad{suffix}"] * 2


def compile_cases(units_list) -> list[dict]:
    """Both scan kernels compiled for sm_90 at each hidden size, without a mask and with one."""
    from aot_helpers import graph_kernel_records

    records = []
    for units in units_list:
        b = GraphBuilder("scans")
        outputs = []
        for masked in (False, True):
            xw = b.input(("N", 50, units), "float32", f"xw_{masked}")
            u = b.input((units, units), "float32", f"recurrent_{masked}")
            mask = [b.input(("N", 50), "float32", "mask")] if masked else []
            h_seq = b.emit1("simple_rnn_scan", [xw, u, *mask], masked=masked)
            outputs += [h_seq, b.emit1("simple_rnn_scan_grad", [u, h_seq, *mask, h_seq], has_dseq=True, has_dh=False,
                                       masked=masked)]
        records += graph_kernel_records(b.finish(outputs), units=units)
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=400)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS for t in _aot_templates(u)]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"].get("HMMA", 0) > 0, r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
