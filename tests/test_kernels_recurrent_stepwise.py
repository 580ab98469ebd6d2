"""The tiled LSTM scans launched step by step (STEPWISE configs, kernels/recurrent_tiled.py): a
launch per time step over blocks of rows and units, the same bits as one launch walking every
step, the tiles autotuning tries, and their compile for sm_90 (checked without a GPU). The tiled
scans' result tests also run stepwise (tests/test_kernels_recurrent_tiled.py at 130 units,
_tiled_masks.py with two of its masks, _dropout.py at 70 units)."""

import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.kernels import recurrent_tiled
from kcomp.passes import run_pipeline
from kcomp.runtime.kernel_cache import load_kernel
from test_kernels_recurrent_tiled import BATCH, TIME, _only_kernel, _scan_graph, _scan_inputs

BLOCKS = dict(BLOCK_B=16, BLOCK_H=32, BLOCK_K=32, num_warps=4)


def _launches_of(config, n_steps=TIME, units=130, batch=BATCH):
    call = recurrent_tiled.ScanCall(None, (), None, (), batch, n_steps, units, "ieee")
    return recurrent_tiled.scan_launches(call, config)


def test_a_stepwise_scan_is_a_launch_per_step_over_blocks_of_rows_and_units():
    (whole,) = _launches_of(BLOCKS, batch=33)
    assert whole == ((3,), 0, TIME, False, BLOCKS)
    steps = _launches_of(dict(BLOCKS, STEPWISE=True), batch=33)
    assert [(first, end) for _, first, end, _, _ in steps] == [(t, t + 1) for t in range(TIME)]
    assert all(grid == (3, 5) and per_chunk and config == BLOCKS for grid, _, _, per_chunk, config in steps)


@pytest.mark.parametrize("save", [False, True])
def test_stepwise_and_whole_sequence_scans_give_the_same_bits(save):
    """The same block sizes compute each block's sums in the same order either way."""
    graph = _scan_graph(130, save, (0, 1, 2) if save else (0, 1))
    module = load_kernel(kernel_source(_only_kernel(graph, "lstm_scan_tiled"), 0))
    inputs = _scan_inputs(130, 11)
    whole = module.launch(*inputs, config=BLOCKS, precision="ieee")
    stepwise = module.launch(*inputs, config=dict(BLOCKS, STEPWISE=True), precision="ieee")
    for a, b in zip(whole, stepwise, strict=True):
        assert torch.equal(a, b)


def test_stepwise_tiles_are_candidates_of_all_but_very_long_sequences():
    binding = recurrent_tiled.LstmTiledScanBinding(kernel_id="t", xw=0, recurrent=1, save=True, outputs=(0, 1, 2))

    def candidates(n_steps, interpret=False):
        return recurrent_tiled._candidates(recurrent_tiled.ScanCall(binding, (), None, (), 32, n_steps, 256, "tf32"), interpret)

    stepwise = [c for c in candidates(500) if c.get("STEPWISE")]
    assert len(stepwise) == len(recurrent_tiled.STEPWISE_TILES)
    assert candidates(500)[0].get("STEPWISE") is None  # AOT builds the first: a whole-sequence launch
    assert not any(c.get("STEPWISE") for c in candidates(recurrent_tiled.STEPWISE_MAX_STEPS + 1))
    assert candidates(500, interpret=True) == [recurrent_tiled.INTERPRETER_BLOCKS]


def compile_cases(units_list) -> list[dict]:
    """The AOT child's job: each stepwise tile's forward (saving) and backward compiled for sm_90."""
    records = []
    for units in units_list:
        b = GraphBuilder("scan")
        xw, u = b.input((32, 1, 4 * units), "float32", "xw"), b.input((units, 4 * units), "float32", "recurrent")
        forward = b.finish(list(b.emit("lstm_scan", [xw, u], save=True)))
        b = GraphBuilder("grad")
        shapes = {"recurrent": (units, 4 * units), "c_seq": (32, 1, units), "gates": (32, 1, 4 * units), "d_seq": (32, 1, units)}
        vs = [b.input(shape, "float32", name) for name, shape in shapes.items()]
        backward = b.finish([b.emit1("lstm_scan_grad", vs, has_dseq=True, has_dh=False, has_dc=False)])
        cases = [(forward, [torch.zeros(32, 1, 4 * units), torch.zeros(units, 4 * units)]),
                 (backward, [torch.zeros(shape) for shape in shapes.values()])]
        from kcomp.runtime.aot.compile import compile_launches

        for config in recurrent_tiled.tile_configs(recurrent_tiled.STEPWISE_TILES, False):
            for graph, inputs in cases:
                fused, _ = run_pipeline(graph)
                (node,) = [n for n in fused.nodes if n.op == "kernel"]
                (result,) = compile_launches(kernel_source(node, 0), inputs, "sm_90", config=dict(config, STEPWISE=True))
                records.append({"units": units, "template": node.attrs["template"], "config": config,
                                "spill_bytes": result.spill_bytes, "local_stores": result.local_stores(),
                                "tensor_cores": sum(result.tensor_core_counts().values())})
    return records


@pytest.mark.slow
def test_stepwise_tiles_compile_for_sm_90_on_tensor_cores_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, [70, 256], tmp_path, timeout=600)
    assert len(records) == 2 * 2 * len(recurrent_tiled.STEPWISE_TILES)
    for rec in records:
        assert rec["spill_bytes"] == 0 and rec["local_stores"] == 0 and rec["tensor_cores"], rec


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
