"""The tiled LSTM scan kernels with a step mask (kernels/recurrent_tiled.py, masked=True), at 70
units (the interpreter's chunks of 32: three chunks, the last partial) and 7 steps: each kernel
against its reference on pre-padded, post-padded, holed and fully masked rows, the kernel's dz
against torch.autograd through the masked reference in float64, and a compiled masked training
step on triton-interpret against the reference executor."""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import lstm_scan_reference
from kcomp.kernels import recurrent_tiled
from kernel_helpers import assert_launch_matches_reference
from test_kernels_recurrent_masks import MASKS, TIME, _mask, assert_masked_embedding_step_runs_the_scans
from test_kernels_recurrent_tiled import _only_kernel
from tolerances import tolerance

BATCH, UNITS = 3, 70  # the masks' (batch, time); tiled: above SCAN_MAX_UNITS


def scan_inputs(units, seed, dtype=torch.float32):
    """(xw, U) for BATCH rows and TIME steps, U scaled so that h @ U is O(1) over `units` terms:
    the gates stay away from saturation."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(BATCH, TIME, 4 * units, generator=g, dtype=dtype),
            torch.randn(units, 4 * units, generator=g, dtype=dtype) / units ** 0.5)


def _inputs(seed):
    return scan_inputs(UNITS, seed)


# Every mask with the interpreter's blocks in one walk over the steps; the masks that keep steps
# mid-sequence and mask a whole row, also step by step (STEPWISE)
STEPWISE = dict(recurrent_tiled.INTERPRETER_BLOCKS, STEPWISE=True)
LAUNCHES = [pytest.param(mask, None, id=f"{mask}-whole") for mask in MASKS] + \
    [pytest.param(mask, STEPWISE, id=f"{mask}-stepwise") for mask in ("holes", "row-fully-masked")]


@pytest.mark.parametrize("mask, config", LAUNCHES)
@pytest.mark.parametrize("save, outputs", [(False, (0, 1)), (True, (0, 1, 2))], ids=["last-c", "saved"])
def test_masked_scan_kernel_matches_the_reference(mask, save, outputs, config):
    """Into NaN-poisoned buffers; a masked step's h_t is h_{t-1} (zeros before the first step read)."""
    b = GraphBuilder("scan")
    vs = [b.input((BATCH, TIME, 4 * UNITS), "float32", "xw"), b.input((UNITS, 4 * UNITS), "float32", "recurrent"),
          b.input((BATCH, TIME), "float32", "mask")]
    outs = b.emit("lstm_scan", vs, save=save, masked=True)
    graph = b.finish([outs[k] for k in outputs])
    h_seq = assert_launch_matches_reference(graph, _only_kernel(graph, "lstm_scan_tiled"), [*_inputs(3), _mask(mask)],
                                            kind="accumulating", precision="ieee", config=config)[0]
    for row, steps in enumerate(MASKS[mask]):
        for t, read in enumerate(steps):
            if not read:
                assert torch.equal(h_seq[row, t], h_seq[row, t - 1] if t else torch.zeros(UNITS))


@pytest.mark.parametrize("mask, config", LAUNCHES)
@pytest.mark.parametrize("has", [(True, True, True), (True, False, False), (False, True, True)],
                         ids=["all", "seq", "last-h-c"])
def test_masked_scan_grad_kernel_matches_the_reference(mask, has, config):
    xw, recurrent = _inputs(5)
    m = _mask(mask)
    _, cs, gates = lstm_scan_reference(xw, recurrent, m, save=True, masked=True)
    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(shape, generator=g) for present, shape in
             zip(has, ((BATCH, TIME, UNITS), (BATCH, UNITS), (BATCH, UNITS))) if present]
    b = GraphBuilder("scan_grad")
    names = ("recurrent", "c_seq", "gates", "mask", *(f"d{i}" for i in range(len(grads))))
    given = (recurrent, cs, gates, m, *grads)
    vs = [b.input(tuple(v.shape), "float32", name) for v, name in zip(given, names)]
    graph = b.finish([b.emit1("lstm_scan_grad", vs, has_dseq=has[0], has_dh=has[1], has_dc=has[2], masked=True)])
    assert_launch_matches_reference(graph, _only_kernel(graph, "lstm_scan_grad_tiled"), list(given),
                                    kind="accumulating", precision="ieee", config=config)


@pytest.mark.parametrize("mask", ["holes", "row-fully-masked"])
def test_masked_scan_grad_kernel_is_autograd_in_float64(mask):
    """dz (float32, the kernel) = d/dxw of sum(h_seq d_seq) + sum(h_T d_h) + sum(c_T d_c) through
    the masked reference scan in float64."""
    xw, recurrent = _inputs(7)
    m = _mask(mask)
    g = torch.Generator().manual_seed(8)
    d_seq, d_h, d_c = torch.randn(BATCH, TIME, UNITS, generator=g), *torch.randn(2, BATCH, UNITS, generator=g)
    xw64 = xw.double().requires_grad_()
    h_seq, c_seq, _ = lstm_scan_reference(xw64, recurrent.double(), m.double(), save=True, masked=True)
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum() + (c_seq[:, -1] * d_c.double()).sum()).backward()
    _, cs, gates = lstm_scan_reference(xw, recurrent, m, save=True, masked=True)
    binding = recurrent_tiled.LstmTiledScanGradBinding(kernel_id="test", recurrent=0, c_seq=1, gates=2, mask=3, d_seq=4,
                                                       d_h=5, d_c=6)
    dz = recurrent_tiled.launch_scan_grad(binding, (recurrent, cs, gates, m, d_seq, d_h, d_c), precision="ieee")
    torch.testing.assert_close(dz, xw64.grad.float(), **tolerance("float32", "accumulating"))


def test_compiled_masked_training_step_runs_the_tiled_scans_and_matches_the_reference():
    """Embedding(mask_zero=True) -> LSTM(70) -> Dense: the masked lstm in the two tiled kernels."""
    assert_masked_embedding_step_runs_the_scans(UNITS, ("lstm_scan_tiled", "lstm_scan_grad_tiled"))


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_UNITS = [128, 256]


@pytest.mark.slow
def test_masked_tiled_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_UNITS, tmp_path, timeout=400)
    assert [(r["units"], r["template"]) for r in records] == \
        [(u, t) for u in AOT_UNITS for t in ("lstm_scan_tiled", "lstm_scan_grad_tiled")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child
    from test_kernels_recurrent import compile_cases  # the hidden size picks the tiled templates

    answer_aot_child(compile_cases, masked=True)
