"""The GRU scans with a mask (kernels/recurrent_gru.py, masked=True): the kernels against their
references under Triton's interpreter with test_kernels_recurrent_masks.py's pre-padded,
post-padded, holed and fully masked rows, the backward reference against torch.autograd in
float64, the decomposed training step of masked GRUs against the whole masked ops, and a compiled
Embedding(mask_zero=True) -> GRU training step against the reference executor and Keras 3."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan_gru import gru_scan_grad_reference, gru_scan_reference, saved_blocks
from kernel_helpers import (
    assert_compiled_matches_reference, kernels_of, with_nonfinite,
)
from recurrent_cases import (
    assert_compiled_step_runs_the_scans, assert_decomposed_masked_step_equals_the_whole_ops,
    assert_predictions_and_a_step_equal_keras,
)
from test_kernels_recurrent_cells import GRU_SCANS
from test_kernels_recurrent_masks import BATCH, MASKS, TIME, UNITS



def _mask(name, dtype=torch.float32):
    return torch.tensor(MASKS[name], dtype=dtype)


def _scan_inputs(g, units, bias, dtype=torch.float32):
    """xw, U (scaled units ** -0.5, so the state neither dies nor grows) and the recurrent bias."""
    return [torch.randn(BATCH, TIME, 3 * units, generator=g, dtype=dtype),
            torch.randn(units, 3 * units, generator=g, dtype=dtype) * units ** -0.5,
            *([torch.randn(3 * units, generator=g, dtype=dtype)] if bias else [])]


def _scan_graph(units, reset_after, bias, save):
    """gru_scan with a mask."""
    b = GraphBuilder("gru_scan")
    xw = b.input((BATCH, TIME, 3 * units), "float32", "xw")
    u = b.input((units, 3 * units), "float32", "recurrent")
    rb = [b.input((3 * units,), "float32", "recurrent_bias")] if bias else []
    m = b.input((BATCH, TIME), "float32", "mask")
    return b.finish(list(b.emit("gru_scan", [xw, u, *rb, m], reset_after=reset_after, save=save, masked=True)))


def _check_scan(units, mask, reset_after, bias, save, template):
    """The masked forward against its reference, in one `template` launch; a masked step repeats h."""
    inputs = [*_scan_inputs(torch.Generator().manual_seed(3), units, bias), _mask(mask)]
    run = assert_compiled_matches_reference(_scan_graph(units, reset_after, bias, save), inputs, kind="accumulating",
                                            precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == [template]
    h_seq = run.want[0]
    for row, steps in enumerate(MASKS[mask]):
        for t, read in enumerate(steps):
            if not read:
                assert torch.equal(h_seq[row, t], h_seq[row, t - 1] if t else torch.zeros(units))


def _grad_case(units, mask, reset_after, has, seed, dtype=torch.float32):
    """(graph, inputs) of a masked gru_scan_grad from the forward reference's h_seq and saved gates."""
    g = torch.Generator().manual_seed(seed)
    xw, u, *bias = _scan_inputs(g, units, reset_after, dtype)
    m = _mask(mask, dtype)
    h_seq, saved = gru_scan_reference(xw, u, *bias, m, reset_after=reset_after, save=True, masked=True)
    grads = [torch.randn(shape, generator=g, dtype=dtype)
             for present, shape in zip(has, ((BATCH, TIME, units), (BATCH, units))) if present]
    b = GraphBuilder("gru_scan_grad")
    names = ("recurrent", "h_seq", "saved", "mask", *(f"d{i}" for i in range(len(grads))))
    vs = [b.input(tuple(v.shape), "float32", name) for v, name in zip((u, h_seq, saved, m, *grads), names)]
    graph = b.finish(list(b.emit("gru_scan_grad", vs, reset_after=reset_after, has_dseq=has[0], has_dh=has[1],
                                 masked=True)))
    return graph, [u, h_seq, saved, m, *grads]


def _check_scan_grad(units, mask, reset_after, has, template):
    graph, inputs = _grad_case(units, mask, reset_after, has, seed=7)
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == [template]


# --- the kernels: on chip, and tiled (kernels/recurrent_tiled_gru.py: 70 units, in chunks of 32) -----

KERNELS = [(UNITS, "gru_scan"), (70, "gru_scan_tiled")]


@pytest.mark.parametrize("units, template", KERNELS, ids=["on-chip", "tiled"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("reset_after, bias", GRU_SCANS)
def test_gru_scan_kernel_with_a_mask_matches_the_reference(units, template, mask, reset_after, bias):
    _check_scan(units, mask, reset_after, bias, save=mask != "holes", template=template)


@pytest.mark.parametrize("units, template", KERNELS, ids=["on-chip", "tiled"])
@pytest.mark.parametrize("reset_after, bias", [GRU_SCANS[0], GRU_SCANS[2]])
def test_masked_scan_kernels_carry_nan_and_inf_as_the_reference(units, template, reset_after, bias):
    """NaN and +-inf in the projected inputs at read and at masked steps of a holed mask: a masked
    step keeps h as it was (a NaN read there goes nowhere), forward and backward."""
    g = torch.Generator().manual_seed(4)
    xw, u, *rb = _scan_inputs(g, units, bias)
    m = _mask("holes")
    xw = with_nonfinite(xw)
    steps = [(p // (TIME * 3 * units), p // (3 * units) % TIME) for p in xw.flatten().isfinite().logical_not().nonzero()]
    assert {m[s].item() for s in steps} == {0.0, 1.0}  # some at read steps, some at masked ones
    run = assert_compiled_matches_reference(_scan_graph(units, reset_after, bias, True), [xw, u, *rb, m],
                                            kind="accumulating", precision="ieee")
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == [template]
    h_seq, saved = run.want
    graph, _ = _grad_case(units, "holes", reset_after, (True, True), seed=5)
    grads = [torch.randn(v.shape, generator=g) for v in graph.inputs[4:]]
    assert_compiled_matches_reference(graph, [u, h_seq, saved, m, *grads], kind="accumulating", precision="ieee")


@pytest.mark.parametrize("units, template", KERNELS, ids=["on-chip", "tiled"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("has", [(True, True), (False, True)], ids=["dseq-dh", "dh"])
def test_gru_scan_grad_kernel_with_a_mask_matches_the_reference(units, template, mask, reset_after, has):
    _check_scan_grad(units, mask, reset_after, has, template.replace("scan", "scan_grad"))


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_scan_grad_reference_with_a_mask_is_autograd(mask, reset_after):
    """The gradients of xw (and, reset_after, of the recurrent bias: the recurrent product's summed)."""
    g = torch.Generator().manual_seed(9)
    xw, u, *bias = _scan_inputs(g, UNITS, reset_after, torch.float64)
    for v in (xw, *bias):
        v.requires_grad_(True)
    m = _mask(mask, torch.float64)
    h_seq, saved = gru_scan_reference(xw, u, *bias, m, reset_after=reset_after, save=True, masked=True)
    assert saved.shape[2] == saved_blocks(reset_after) * UNITS
    d_seq, d_h = torch.randn(h_seq.shape, generator=g, dtype=torch.float64), torch.randn(BATCH, UNITS, generator=g,
                                                                                           dtype=torch.float64)
    ((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum()).backward()
    got = gru_scan_grad_reference(u, h_seq.detach(), saved.detach(), m, d_seq, d_h, reset_after=reset_after,
                                  has_dseq=True, has_dh=True, masked=True)
    dxw, *dhu = got if reset_after else (got,)
    torch.testing.assert_close(dxw, xw.grad, rtol=1e-10, atol=1e-10)
    if reset_after:
        torch.testing.assert_close(dhu[0].sum((0, 1)), bias[0].grad, rtol=1e-10, atol=1e-10)
    masked = m == 0
    assert not dxw[masked].any() and (dxw[~masked] != 0).any()


# --- the decomposed training step of masked GRUs ----------------------------------------------------

MASKED_VARIANTS = [dict(masking=True), dict(masking=True, go_backwards=True),
                   dict(masking=True, return_sequences=True, zero_output_for_mask=True),
                   dict(masking=True, reset_after=False, return_sequences=True, go_backwards=True),
                   dict(masking=True, reset_after=False, zero_output_for_mask=True),
                   dict(masking=True, return_state=True, use_bias=False), dict(masking=True, bidirectional=True)]


def _ids(variant):
    return "-".join(f"{k}" if v is True else f"{k}={v}" for k, v in variant.items() if k != "masking") or "default"


@pytest.mark.parametrize("variant", MASKED_VARIANTS, ids=_ids)
def test_decomposed_masked_gru_step_equals_the_whole_ops(variant):
    assert_decomposed_masked_step_equals_the_whole_ops(kcomp.layers.GRU, "gru", variant)


# Samples pre-padded, post-padded, with holes, fully padded; ids below 10.
IDS = np.array([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 0, 0, 0], [4, 0, 2, 9, 0, 3, 0], [0] * TIME], "int32")
LABELS = np.array([0, 1, 2, 1])


def embedding_gru(lib, units=UNITS, **flags):
    inp = lib.layers.Input(shape=(TIME,), dtype="int32")
    seq = lib.layers.Embedding(10, 5, mask_zero=True)(inp)
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(lib.layers.GRU(units, **flags)(seq)))


def assert_masked_step_runs_the_scans(units, scan, **flags):
    """Embedding(mask_zero=True) -> GRU(units) -> Dense on triton-interpret: the masked gru runs as the
    `scan` kernel and its gradient (no coarse op), with the reference executor's losses and weights."""

    def make():
        kcomp.utils.set_random_seed(3)
        return embedding_gru(kcomp, units, **flags)

    y = kcomp.utils.to_categorical(LABELS, 3)
    assert_compiled_step_runs_the_scans(make, IDS, y, (scan, scan.replace("scan", "scan_grad")))


@pytest.mark.parametrize("flags", [{}, dict(reset_after=False, go_backwards=True)], ids=["default", "reset_before-back"])
def test_compiled_masked_training_step_runs_the_scans_and_matches_the_reference(flags):
    assert_masked_step_runs_the_scans(UNITS, "gru_scan", **flags)


def test_compiled_masked_gru_training_step_is_keras():
    """Keras 3 side by side on the generated kernels: the same predictions, loss and weights after an
    Adam step on the masked batch (the fully padded sample included)."""
    from keras_oracle import keras, twins

    ours, theirs = twins(lambda lib: embedding_gru(lib, return_sequences=False))
    ours.compile(optimizer=kcomp.optimizers.Adam(0.05), loss="categorical_crossentropy", backend="triton-interpret")
    theirs.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    assert_predictions_and_a_step_equal_keras(ours, theirs, IDS, kcomp.utils.to_categorical(LABELS, 3))
    (step,) = ours._training.steps.values()
    assert [k.node.attrs["template"] for k in step.runner.plan.kernels].count("gru_scan_grad") == 1


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [32, 64]  # the masked on-chip GRU scans: tiles on chip, and read every step (tiled: test_kernels_recurrent_tiled_gru)


@pytest.mark.slow
def test_masked_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=300)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in AOT_UNITS
                                                              for t in ("gru_scan", "gru_scan_grad") * 2]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child: python tests/test_kernels_recurrent_gru_masks.py CASES_JSON ANSWER_PATH
    import json
    import sys
    from pathlib import Path

    from aot_helpers import graph_kernel_records
    from test_kernels_recurrent_cells import emit_gru_scans

    records = []
    for units in json.loads(sys.argv[1]):
        b = GraphBuilder("scans")
        records += graph_kernel_records(b.finish(emit_gru_scans(b, units, masked=True)), units=units)
    Path(sys.argv[2]).write_text(json.dumps(records, default=str))
