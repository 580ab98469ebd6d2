"""The matmul template batched (BATCHED: B of rank >= 3, kernels/matmul.py) under Triton's
interpreter, against torch.matmul through the reference executor: broadcast batch axes on either
side, transposed (strided) operands read in place, batch axes that do not merge into two (copied),
NaN and inf, float16, and the epilogue and prologue hooks at each matrix's rows. The recurrent-dropout
training steps that run these kernels: test_kernels_recurrent_dropout.py and
test_kernels_recurrent_gru_rnn_dropout.py (their plans have no torch matmul left)."""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.passes import run_pipeline
from kcomp.kernels.matmul import batch_axes
from kernel_helpers import assert_compiled_matches_reference, assert_launch_matches_reference, kernels_of, with_nonfinite

# (A's shape, B's shape); "N" is the batch the inputs bind (3). Ragged: no block size divides them.
SHAPES = [
    ((3, 1, 7, 5), (2, 5, 6)),  # both broadcast: A over B's batch, B over A's first axis
    ((2, 7, 5), (2, 5, 6)),
    ((7, 5), (2, 5, 6)),  # a rank-2 A, broadcast over B's batch
    (("N", 4, 7, 5), (4, 5, 6)),  # the recurrent-dropout projection: (batch, gates, time, features) @ (gates, features, units)
    ((2, 3, 4, 37, 23), (3, 1, 23, 19)),  # three batch axes that do not merge into two: copied whole
    ((1, 37, 23), (2, 23, 19)),  # several tiles per matrix, a size-1 batch axis
]
SHAPE_IDS = ["broadcast-both", "same-batch", "rank2-a", "gates", "three-axes", "tiles"]
BATCH = 3


def _sizes(shape):
    return tuple(BATCH if d == "N" else d for d in shape)


def _matmul_graph(a_shape, b_shape, dtype="float32", transposed=False):
    """a @ b; transposed: each given with its last two axes swapped, read through a transpose (a view)."""
    b = GraphBuilder("bmm")
    swap = (lambda s: (*s[:-2], s[-1], s[-2])) if transposed else (lambda s: s)
    x, w = b.input(swap(a_shape), dtype, "a"), b.input(swap(b_shape), dtype, "b")
    if transposed:
        x, w = (b.emit1("transpose", [v], perm=(*range(v.rank - 2), v.rank - 1, v.rank - 2)) for v in (x, w))
    return b.finish([b.emit1("matmul", [x, w])])


def _inputs(graph, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(_sizes(v.shape), generator=g).to(dtype) for v in graph.inputs]


def _one_matmul_kernel(graph):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "matmul"
    assert not [n for n in fused.nodes if n.op == "matmul"], "a matmul left to torch"
    return kernel


@pytest.mark.parametrize("a_shape, b_shape", SHAPES, ids=SHAPE_IDS)
def test_batched_matmul_is_one_kernel_and_matches_torch(a_shape, b_shape):
    graph = _matmul_graph(a_shape, b_shape)
    inputs = _inputs(graph)
    got = assert_launch_matches_reference(graph, _one_matmul_kernel(graph), inputs, kind="accumulating", precision="ieee")
    torch.testing.assert_close(got[0], torch.matmul(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a_shape, b_shape", [SHAPES[0], SHAPES[3], SHAPES[4]], ids=["broadcast-both", "gates", "three-axes"])
def test_transposed_operands_are_read_through_their_strides(a_shape, b_shape):
    """A and B as transposed views (a weight gradient's v^T, a kernel's per-gate W^T): the plan passes
    them strided, the kernel reads them so."""
    graph = _matmul_graph(a_shape, b_shape, transposed=True)
    _one_matmul_kernel(graph)
    assert_compiled_matches_reference(graph, _inputs(graph), kind="accumulating", precision="ieee")


def test_batch_axes_keep_strides_and_copy_only_what_does_not_merge():
    a = torch.randn(3, 1, 7, 5)
    b = torch.randn(2, 6, 5).transpose(1, 2)
    a2, b2, axes = batch_axes(a, b)
    assert (axes.count, axes.inner, axes.a, axes.b) == (6, 2, (35, 0), (0, 30))
    assert a2.data_ptr() == a.data_ptr() and b2.data_ptr() == b.data_ptr()  # views, no copies
    _, _, axes = batch_axes(torch.randn(2, 4, 7, 5), torch.randn(2, 4, 5, 6))
    assert (axes.count, axes.inner, axes.a, axes.b) == (8, 8, (0, 35), (0, 30))  # merged into one axis
    a = torch.randn(2, 3, 4, 7, 5)
    a3, b3, axes = batch_axes(a, torch.randn(3, 1, 5, 6))
    assert a3.is_contiguous() and b3.is_contiguous() and b3.shape == (2, 3, 4, 5, 6)
    assert (axes.count, axes.inner, axes.a, axes.b) == (24, 24, (0, 35), (0, 30))


@pytest.mark.parametrize("a_shape, b_shape", [SHAPES[0], SHAPES[3]], ids=["broadcast-both", "gates"])
def test_nan_and_inf_reach_the_output_as_torch_matmul(a_shape, b_shape):
    graph = _matmul_graph(a_shape, b_shape)
    a, b = _inputs(graph, seed=1)
    inputs = [with_nonfinite(a), with_nonfinite(b, places=(float("inf"),))]
    compared = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee", float64_reference=True)
    assert compared.got[0].isnan().any() and compared.got[0].isinf().any()


@pytest.mark.parametrize("a_shape, b_shape", [SHAPES[0], SHAPES[5]], ids=["broadcast-both", "tiles"])
def test_float16(a_shape, b_shape):
    graph = _matmul_graph(a_shape, b_shape, dtype="float16")
    assert_launch_matches_reference(graph, _one_matmul_kernel(graph), _inputs(graph, torch.float16), kind="accumulating")


def test_epilogue_reads_each_matrix_rows():
    """relu(a @ b + r) * s + bias: r and s of the output's shape are loaded at each matrix's rows, the
    bias along the last axis; one kernel."""
    b = GraphBuilder("bmm_epilogue")
    x, w = b.input((2, 3, 37, 23), "float32", "a"), b.input((3, 23, 19), "float32", "b")
    r, s, bias = b.input((2, 3, 37, 19), "float32", "r"), b.input((2, 3, 37, 19), "float32", "s"), b.input((19,), "float32", "bias")
    y = b.emit1("relu", [b.emit1("add", [b.emit1("matmul", [x, w]), r])])
    graph = b.finish([b.emit1("bias_add", [b.emit1("mul", [y, s]), bias])])
    kernel = _one_matmul_kernel(graph)
    assert [n.op for n in kernel.attrs["body"].nodes] == ["matmul", "add", "relu", "mul", "bias_add"]
    assert_launch_matches_reference(graph, kernel, _inputs(graph, seed=2), kind="accumulating", precision="ieee")


def test_prologue_where_a_is_not_broadcast():
    """tanh(a * p) @ b: the prologue reads p at each matrix's rows of A. With A broadcast over B's batch
    the product with p is a kernel of its own (A's rows repeat across the batch)."""
    for a_shape, kernels in [((2, 37, 23), 1), ((37, 23), 2)]:
        b = GraphBuilder("bmm_prologue")
        x, p, w = b.input(a_shape, "float32", "a"), b.input(a_shape, "float32", "p"), b.input((2, 23, 19), "float32", "b")
        graph = b.finish([b.emit1("matmul", [b.emit1("tanh", [b.emit1("mul", [x, p])]), w])])
        fused, _ = run_pipeline(graph)
        assert len(kernels_of(fused)) == kernels and kernels_of(fused)[-1].attrs["template"] == "matmul"
        assert_compiled_matches_reference(graph, _inputs(graph, seed=3), kind="accumulating", precision="ieee")


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

# (A, B) at batch 128: an LSTM(256)'s recurrent-dropout projection, its d kernel per row (A a
# transposed view, time contracted) and d x; and broadcast both ways.
AOT_CASES = [(("N", 4, 50, 64), (4, 64, 256)), (("N", 4, 64, 50), ("N", 4, 50, 256)),
             (("N", 4, 50, 256), (4, 256, 64)), ((3, 1, 100, 96), (2, 96, 80))]


def compile_cases(cases) -> list[dict]:
    """One record per (case, dtype): the batched matmul kernel compiled for sm_90 at batch 128."""
    from aot_helpers import record
    from kcomp.runtime.aot import compile_node

    records = []
    for a_shape, b_shape in cases:
        kernel = _one_matmul_kernel(_matmul_graph(tuple(a_shape), tuple(b_shape)))
        for dtype in ("float32", "bfloat16"):
            result = compile_node(kernel, 0, target="sm_90", batch=128, float_dtype=None if dtype == "float32" else dtype)
            records.append({"case": [a_shape, b_shape], "dtype": dtype, **record(result)})
    return records


@pytest.mark.slow
def test_batched_kernels_compile_for_sm_90_on_tensor_cores_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path)
    assert [(tuple(map(tuple, r["case"])), r["dtype"]) for r in records] == \
        [(tuple(map(tuple, c)), d) for c in AOT_CASES for d in ("float32", "bfloat16")]
    for r in records:
        assert r["ptx_target"] == "sm_90a" and r["fits_shared"], r
        assert (r["spill_bytes"], r["local_stores"]) == (0, 0), r
        assert r["tensor_cores"].get("HGMMA", 0) > 0, r  # Hopper's warpgroup MMA, as the rank-2 path's
        assert r["constants"]["BATCHED"] is True, r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
