"""The tiled GRU recurrence kernels (kernels/recurrent_tiled_gru.py), for hidden sizes above the
on-chip limit, under Triton's interpreter at small ragged sizes that still take the tiled path:
70 units in chunks of 32, or of 16 with K-chunks of 32, so several output chunks and K-chunks run,
the last ones partial; both reset_after modes, with and without a mask (the masked kernels at 70 units:
test_kernels_recurrent_gru_masks.py)."""

import pytest
import torch

import kcomp
from kcomp.ir.ops.recurrent_scan_gru import GRU_SCAN_MAX_UNITS, GRU_SCAN_TILED_MAX_UNITS, gru_scan_reference
from kcomp.kernels import recurrent_tiled_gru
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE
from kernel_helpers import assert_launch_matches_reference, kernels_of, with_nonfinite
from recurrent_cases import assert_decomposed_step_equals_the_whole_ops, recurrent_model
from test_kernels_recurrent_cells import GRU_SCANS, _gru_grad_case, _gru_scan_graph, _gru_scan_inputs, emit_gru_scans
from test_kernels_recurrent_gru_masks import assert_masked_step_runs_the_scans
from tolerances import tolerance

# (units, blocks): the interpreter's own (chunks of 32), and chunks of 16 units with K-chunks of 32
CHUNKINGS = [(70, None), (70, dict(BLOCK_B=16, BLOCK_H=16, BLOCK_K=32, num_warps=4))]
CHUNKING_IDS = ["blocks32", "blocks16x32"]
UNITS = 70


def _only_kernel(graph, template):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == template
    return kernel


@pytest.mark.parametrize("units, config", CHUNKINGS, ids=CHUNKING_IDS)
@pytest.mark.parametrize("reset_after, bias", GRU_SCANS)
@pytest.mark.parametrize("save", [False, True])
def test_scan_kernel_matches_the_reference(units, config, reset_after, bias, save):
    """Every output into a NaN-poisoned buffer (an element left unwritten fails)."""
    graph = _gru_scan_graph(units, reset_after, bias, save)
    kernel = _only_kernel(graph, "gru_scan_tiled")
    assert_launch_matches_reference(graph, kernel, _gru_scan_inputs(units, bias, seed=units + save),
                                    kind="accumulating", precision="ieee", config=config)


@pytest.mark.parametrize("reset_after, bias", [GRU_SCANS[0], GRU_SCANS[2]])
def test_scan_kernel_carries_nan_and_inf_as_the_reference(reset_after, bias):
    units, config = CHUNKINGS[1]
    graph = _gru_scan_graph(units, reset_after, bias, True)
    inputs = _gru_scan_inputs(units, bias, seed=9)
    inputs[0] = with_nonfinite(inputs[0])
    assert_launch_matches_reference(graph, _only_kernel(graph, "gru_scan_tiled"), inputs, kind="accumulating",
                                    precision="ieee", config=config)


@pytest.mark.parametrize("units, config", CHUNKINGS, ids=CHUNKING_IDS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("has_dseq, has_dh", [(True, False), (False, True)])
def test_scan_grad_kernel_matches_the_reference(units, config, reset_after, has_dseq, has_dh):
    graph, inputs = _gru_grad_case(units, reset_after, has_dseq, has_dh, seed=units)
    kernel = _only_kernel(graph, "gru_scan_grad_tiled")
    assert_launch_matches_reference(graph, kernel, inputs, kind="accumulating", precision="ieee", config=config)


@pytest.mark.parametrize("reset_after", [True, False])
def test_scan_grad_kernel_is_autograd_through_the_scan_in_float64(reset_after):
    """The kernel's dxw (float32) against torch.autograd through the reference scan in float64: the
    gradient of sum(h_seq * d_seq) + sum(h_T * d_h) with respect to xw."""
    units, config = CHUNKINGS[1]
    xw, recurrent, *bias = _gru_scan_inputs(units, reset_after, seed=5)
    g = torch.Generator().manual_seed(6)
    d_seq, d_h = torch.randn(xw.shape[0], xw.shape[1], units, generator=g), torch.randn(xw.shape[0], units, generator=g)
    xw64 = xw.double().requires_grad_()
    h64 = gru_scan_reference(xw64, recurrent.double(), *(b.double() for b in bias), reset_after=reset_after, save=False)
    ((h64 * d_seq.double()).sum() + (h64[:, -1] * d_h.double()).sum()).backward()
    h_seq, saved = gru_scan_reference(xw, recurrent, *bias, reset_after=reset_after, save=True)
    binding = recurrent_tiled_gru.GruTiledScanGradBinding(kernel_id="test", recurrent=0, h_seq=1, saved=2, d_seq=3,
                                                          d_h=4, reset_after=reset_after,
                                                          outputs=(0, 1) if reset_after else (0,))
    out = recurrent_tiled_gru.launch_scan_grad(binding, (recurrent, h_seq, saved, d_seq, d_h), config=config,
                                               precision="ieee")
    dxw = out[0] if reset_after else out
    torch.testing.assert_close(dxw, xw64.grad.float(), **tolerance("float32", "accumulating"))


def test_the_hidden_size_picks_the_template():
    """On chip up to GRU_SCAN_MAX_UNITS, tiled above it up to GRU_SCAN_TILED_MAX_UNITS (past that the
    gru op stays whole: test_kernels_recurrent_cells.py)."""
    for units, scan, grad in ((GRU_SCAN_MAX_UNITS, "gru_scan", "gru_scan_grad"),
                              (GRU_SCAN_MAX_UNITS + 1, "gru_scan_tiled", "gru_scan_grad_tiled"),
                              (GRU_SCAN_TILED_MAX_UNITS, "gru_scan_tiled", "gru_scan_grad_tiled")):
        _only_kernel(_gru_scan_graph(units, True, True, True), scan)
        _only_kernel(_gru_grad_case(units, False, True, False, seed=0)[0], grad)


# --- models -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [dict(), dict(reset_after=False, return_sequences=True, go_backwards=True),
                                     dict(masking=True, return_state=True, use_bias=False),
                                     dict(masking=True, reset_after=False, zero_output_for_mask=True)],
                         ids=["default", "reset_before-sequences-backwards", "masked-state-nobias",
                              "masked-reset_before-zero_output"])
def test_decomposed_training_step_equals_the_gru_op(variant):
    """The decomposition of a GRU(70) (before fusion), run by the reference interpreter, against the
    training step with the whole gru and gru_grad ops; fused, its scans are the tiled ones."""
    # O(1) products over 70 units (weights scaled by 1 / sqrt(fan-in)): the gates do not saturate
    decomposed = assert_decomposed_step_equals_the_whole_ops(
        recurrent_model(kcomp.layers.GRU, variant, UNITS)(), "gru", padding=variant.get("masking", False),
        weight_scale=lambda shape: shape[0] ** -0.5 if shape else 1.0)
    templates = [k.attrs["template"] for k in kernels_of(run_pipeline(decomposed, passes=STEP_PIPELINE[-1:])[0])]
    assert templates.count("gru_scan_tiled") == 1 and templates.count("gru_scan_grad_tiled") == 1
    assert "gru_scan" not in templates and "gru_scan_grad" not in templates


def test_compiled_masked_training_step_runs_the_tiled_scans():
    """Embedding(mask_zero=True) -> GRU(70, reset_after=False) (the tiled kernels' two phases a step)."""
    assert_masked_step_runs_the_scans(UNITS, "gru_scan_tiled", reset_after=False)


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [70, 128, 256]  # 70: no 16 divides it (unvectorized loads, the most registers)


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=600)
    templates = [t for masked in (False, True) for t in ("gru_scan_tiled", "gru_scan_grad_tiled") * 2]
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS for t in templates]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


def compile_cases(units_list) -> list[dict]:
    """The kernels compiled for sm_90 at each hidden size: the GRU with reset_after, then without,
    unmasked then masked; one record per kernel."""
    from aot_helpers import graph_kernel_records
    from kcomp.ir.builder import GraphBuilder

    records = []
    for units in units_list:
        for masked in (False, True):
            b = GraphBuilder("scans")
            records += graph_kernel_records(b.finish(emit_gru_scans(b, units, masked)), units=units)
    return records


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
