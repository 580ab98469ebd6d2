"""The embedding kernels (kernels/gather.py), the matmul that gathers its A rows through the ids
(kcomp/passes/fuse_gather.py) and the embedding gradient's sort + ordered sum
(kcomp/passes/decompose_embedding.py), under Triton's interpreter at small ragged sizes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.passes import run_pipeline
from kernel_helpers import (
    assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, kernels_of, launch_kernel,
)

BATCH, TIME, FEATURES, UNITS, VOCAB = 3, 7, 5, 6, 11  # ragged: no block size divides them
TORCH = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int32": torch.int32,
         "int64": torch.int64}


def fresh_ids(shape, dtype, generator, vocab=VOCAB):
    """Random ids with both ends of the table present (0 and vocab - 1)."""
    ids = torch.randint(0, vocab, shape, generator=generator, dtype=TORCH[dtype])
    ids.view(-1)[0], ids.view(-1)[-1] = 0, vocab - 1
    return ids


def _one_kernel(graph):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    return fused, kernel


# --- the gather ---------------------------------------------------------------------------------


def _gather_graph(ids_shape, ids_dtype, dtype):
    b = GraphBuilder("gather")
    ids = b.input(ids_shape, ids_dtype, "ids")
    table = b.input((VOCAB, FEATURES), dtype, "table")
    return b.finish([b.emit1("embedding", [ids, table])])


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
@pytest.mark.parametrize("ids_shape", [(BATCH, TIME), (37,), (BATCH, 2, TIME)], ids=["2d", "1d", "3d"])
def test_gather_kernel_copies_the_rows(ids_shape, ids_dtype, dtype):
    g = torch.Generator().manual_seed(sum(ids_shape))
    graph = _gather_graph(ids_shape, ids_dtype, dtype)
    _, kernel = _one_kernel(graph)
    assert kernel.attrs["template"] == "embedding"
    ids, table = fresh_ids(ids_shape, ids_dtype, g), torch.randn(VOCAB, FEATURES, generator=g).to(TORCH[dtype])
    (got,), (want,) = launch_kernel(graph, kernel, [ids, table])  # into a NaN-poisoned buffer
    assert got.dtype == table.dtype and torch.equal(got, want)  # a copy: the same bits


def test_gather_with_the_activations_after_it_as_epilogue():
    b = GraphBuilder("gather_tanh")
    ids, table = b.input((None, TIME), "int64", "ids"), b.input((VOCAB, FEATURES), "float32", "table")
    scale = b.input((FEATURES,), "float32", "scale")
    graph = b.finish([b.emit1("tanh", [b.emit1("mul", [b.emit1("embedding", [ids, table]), scale])])])
    g = torch.Generator().manual_seed(3)
    inputs = [fresh_ids((BATCH, TIME), "int64", g), torch.randn(VOCAB, FEATURES, generator=g), torch.randn(FEATURES, generator=g)]
    run = assert_compiled_matches_reference(graph, inputs, kind="elementwise")
    (kernel,) = kernels_of(run.fused)
    assert kernel.attrs["template"] == "embedding" and kernel.attrs["roles"] == ("anchor", "epilogue", "epilogue")


def test_an_id_outside_the_table_gives_nan_rows_not_a_read_outside_it():
    """The range check before launch refuses such ids at the API (tests/test_errors.py); an id
    computed inside a graph reaches the kernel unchecked, which reads nothing for it and writes NaN."""
    graph = _gather_graph((BATCH, TIME), "int64", "float32")
    _, kernel = _one_kernel(graph)
    ids = fresh_ids((BATCH, TIME), "int64", torch.Generator().manual_seed(4))
    ids[1, 2], ids[2, 5] = VOCAB, -1
    table = torch.randn(VOCAB, FEATURES)
    from kcomp.codegen.module import kernel_source
    from kcomp.runtime.kernel_cache import load_kernel

    got = load_kernel(kernel_source(kernel, 0)).launch(ids, table)
    bad = torch.zeros(BATCH, TIME, dtype=torch.bool)
    bad[1, 2] = bad[2, 5] = True
    assert got[bad].isnan().all()
    assert torch.equal(got[~bad], table[ids[~bad]])


# --- the gradient: a stable sort, each id's run summed in chunks, then each row's chunk sums ------


def _grad_graph(ids_shape, ids_dtype, dtype, vocab=VOCAB, chunk=None):
    """embedding_grad; or, with `chunk`, the decompose pass's three ops written out with that
    chunk instead of its CHUNK (128), so that small tests cut runs into several chunks."""
    b = GraphBuilder("embedding_grad")
    ids = b.input(ids_shape, ids_dtype, "ids")
    dy = b.input((*ids_shape, FEATURES), dtype, "dy")
    if chunk is None:
        return b.finish([b.emit1("embedding_grad", [ids, dy], input_dim=vocab)])
    sorted_ids, positions = b.emit("sort_ids", [ids])
    sums = b.emit1("embedding_grad_chunks", [sorted_ids, positions, dy], chunk=chunk)
    return b.finish([b.emit1("embedding_grad_sorted", [sorted_ids, sums], input_dim=vocab, chunk=chunk, dtype=dtype)])


def _grad_kernels(graph):
    """The fused plan: the sort (a torch op) and the two kernels."""
    fused, _ = run_pipeline(graph)
    assert [n.op for n in fused.nodes] == ["sort_ids", "kernel", "kernel"]  # the sort is a torch op in the plan
    kernels = kernels_of(fused)
    assert [k.attrs["template"] for k in kernels] == ["embedding_grad_chunks", "embedding_grad"]
    return kernels


def _launch_grad(kernels, ids, dy, config=(None, None)):
    """The sort (its reference, as the plan runs it), then both kernels into NaN-poisoned buffers;
    also the ops' references on the same inputs (the order they define)."""
    from kcomp.codegen.module import kernel_source
    from kcomp.ir.registry import OPS
    from kcomp.runtime.kernel_cache import load_kernel

    sorted_ids, positions = OPS["sort_ids"].reference(ids)
    chunks, rows = (k.attrs["body"].nodes[-1] for k in kernels)
    sums = torch.full(dy.shape, float("nan"), dtype=torch.float64 if dy.dtype == torch.float64 else torch.float32)
    load_kernel(kernel_source(kernels[0], 0)).launch(sorted_ids, positions, dy, out=sums, config=config[0])
    want_sums = OPS["embedding_grad_chunks"].reference(sorted_ids, positions, dy, **chunks.attrs)
    # every index stored, in the order the reference defines (NaN where a NaN was added)
    torch.testing.assert_close(sums, want_sums, rtol=0, atol=0, equal_nan=True)
    out = torch.full((rows.attrs["input_dim"], dy.shape[-1]), float("nan"), dtype=dy.dtype)
    load_kernel(kernel_source(kernels[1], 1)).launch(sorted_ids, sums, out=out, config=config[1])
    return out, OPS["embedding_grad_sorted"].reference(sorted_ids, want_sums, **rows.attrs)


def _index_add(ids, dy, vocab):
    """torch's scatter-add on the CPU: row by row, its terms in order of position."""
    return dy.new_zeros(vocab, dy.shape[-1]).index_add_(0, ids.reshape(-1).long(), dy.reshape(-1, dy.shape[-1]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
@pytest.mark.parametrize("ids_shape", [(BATCH, TIME), (37,), (BATCH, 2, TIME)], ids=["2d", "1d", "3d"])
def test_grad_kernels_are_the_ordered_scatter_add(ids_shape, ids_dtype, dtype):
    """Every row the sum of dy's rows at its ids (repeated ids, rows no id reaches stay 0). With
    the decompose pass's chunk (128 sorted indices, more than these ids) no run is cut: the same
    bits as index_add_, which adds a row's terms in order of position, as the chunks' pass does."""
    g = torch.Generator().manual_seed(len(ids_shape))
    graph = _grad_graph(ids_shape, ids_dtype, dtype)
    kernels = _grad_kernels(graph)
    ids = fresh_ids(ids_shape, ids_dtype, g, vocab=6)  # ids 0..5 of 11: repeats, and rows 6..10 unread
    ids.view(-1)[-1] = VOCAB - 1
    dy = torch.randn(*ids_shape, FEATURES, generator=g, dtype=TORCH[dtype])
    got, reference = _launch_grad(kernels, ids, dy)
    want = _index_add(ids, dy, VOCAB)
    assert torch.equal(got, want), (got - want).abs().max()
    assert torch.equal(got, reference)
    assert not got[6:VOCAB - 1].any()


def test_grad_kernels_keep_nan_and_inf():
    ids = fresh_ids((BATCH, TIME), "int64", torch.Generator().manual_seed(5), vocab=4)
    dy = torch.randn(BATCH, TIME, FEATURES)
    dy[0, 1, 2], dy[1, 3, 0], dy[2, 2, 4] = float("nan"), float("inf"), -float("inf")
    for chunk in (None, 2):
        got, reference = _launch_grad(_grad_kernels(_grad_graph((BATCH, TIME), "int64", "float32", chunk=chunk)), ids, dy)
        torch.testing.assert_close(got, _index_add(ids, dy, VOCAB), rtol=0, atol=0 if chunk is None else 1e-5,
                                   equal_nan=True)
        torch.testing.assert_close(got, reference, rtol=0, atol=0, equal_nan=True)


# Chunks of 3 sorted indices: runs of several chunks, runs cut anywhere in a chunk.
CUT_RUNS = {
    "one-id": lambda g, n: torch.zeros(n, dtype=torch.int64),  # every id the same: one run, many chunks
    "padding": lambda g, n: torch.cat([torch.zeros(n // 2, dtype=torch.int64), torch.randint(1, VOCAB, (n - n // 2,), generator=g)]),
    "few-ids": lambda g, n: torch.randint(0, 3, (n,), generator=g),
}


@pytest.mark.parametrize("case", CUT_RUNS)
@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_grad_kernels_sum_runs_cut_into_chunks_against_autograd_in_float64(case, chunk):
    g = torch.Generator().manual_seed(chunk)
    ids = CUT_RUNS[case](g, 37)
    graph = _grad_graph((37,), "int64", "float64", chunk=chunk)
    table = torch.randn(VOCAB, FEATURES, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(37, FEATURES, generator=g, dtype=torch.float64)
    F.embedding(ids, table).backward(dy)
    got, reference = _launch_grad(_grad_kernels(graph), ids, dy)
    assert torch.equal(got, reference)
    torch.testing.assert_close(got, table.grad, rtol=1e-12, atol=1e-12)


def test_grad_against_autograd_in_float64():
    g = torch.Generator().manual_seed(6)
    graph = _grad_graph((BATCH, TIME), "int32", "float64")
    ids = fresh_ids((BATCH, TIME), "int32", g, vocab=5)
    table = torch.randn(VOCAB, FEATURES, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(BATCH, TIME, FEATURES, generator=g, dtype=torch.float64)
    F.embedding(ids.long(), table).backward(dy)
    torch.testing.assert_close(_launch_grad(_grad_kernels(graph), ids, dy)[0], table.grad, rtol=1e-12, atol=1e-12)


def test_grad_is_bit_identical_run_to_run_and_across_block_sizes():
    """Many repeats of few ids (runs longer than several chunks, cut anywhere), of values far
    apart in size, so that any change in the order of the additions changes the bits: the same
    bits whatever the chunks per program, rows per program, columns per program and warps, and
    the bits of the order the ops' references define (for this chunk: not index_add_'s)."""
    g = torch.Generator().manual_seed(7)
    n = 300
    ids = torch.randint(0, 3, (n,), generator=g)
    ids[:40] = 1  # a run of 40 + ~87: chunks of 16 end inside it, others whole inside it
    dy = torch.randn(n, FEATURES, generator=g) * torch.logspace(-6, 6, n)[:, None]
    kernels = _grad_kernels(_grad_graph((n,), "int64", "float32", chunk=16))
    first, reference = _launch_grad(kernels, ids, dy)
    assert torch.equal(first, reference)
    assert torch.equal(first, _launch_grad(kernels, ids, dy)[0])
    for config in ((dict(BLOCK_C=1, BLOCK_D=2, num_warps=1), dict(BLOCK_R=1, BLOCK_D=2, num_warps=1)),
                   (dict(BLOCK_C=8, BLOCK_D=8, num_warps=4), dict(BLOCK_R=4, BLOCK_D=8, num_warps=4)),
                   (dict(BLOCK_C=64, BLOCK_D=4, num_warps=2), dict(BLOCK_R=16, BLOCK_D=4, num_warps=2))):
        assert torch.equal(first, _launch_grad(kernels, ids, dy, config)[0]), config
    assert not torch.equal(first, _index_add(ids, dy, VOCAB))  # the chunked order shows in the bits...
    torch.testing.assert_close(first, _index_add(ids, dy, VOCAB), rtol=1e-5, atol=1e-5)  # ...not in the sums
    whole, _ = _launch_grad(_grad_kernels(_grad_graph((n,), "int64", "float32", chunk=n)), ids, dy)  # one chunk: index_add_'s order
    assert torch.equal(whole, _index_add(ids, dy, VOCAB))


def test_the_compiled_gradient_repeats_bit_for_bit():
    graph = _grad_graph((None, TIME), "int32", "float32", vocab=4)
    g = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 4, (BATCH, TIME), generator=g, dtype=torch.int32)
    dy = torch.randn(BATCH, TIME, FEATURES, generator=g)
    run = assert_compiled_matches_reference(graph, [ids, dy], kind="exact")
    assert torch.equal(run.executor.run([ids, dy], {})[0], run.got[0])


# --- the matmul that reads its A rows through the ids ---------------------------------------------


def _sequential(layers, ids_dtype="int32"):
    def make():
        kcomp.utils.set_random_seed(5)
        return kcomp.Sequential([kcomp.layers.Input(shape=(TIME,), dtype=ids_dtype), kcomp.layers.Embedding(VOCAB, FEATURES),
                                 *layers()])

    return make


GATHERING = {
    "dense": (lambda: [kcomp.layers.Dense(UNITS, activation="relu")], ["embedding", "matmul", "bias_add", "relu"]),
    "activation-dense": (lambda: [kcomp.layers.Activation("tanh"), kcomp.layers.Dense(UNITS)],
                         ["embedding", "tanh", "matmul", "bias_add"]),
    "time-distributed": (lambda: [kcomp.layers.TimeDistributed(kcomp.layers.Dense(UNITS))], ["embedding", "matmul", "bias_add"]),
    "lstm": (lambda: [kcomp.layers.LSTM(UNITS)], ["embedding", "matmul", "bias_add"]),
}


@pytest.mark.parametrize("ids_dtype", ["int32", "int64"])
@pytest.mark.parametrize("case", GATHERING)
def test_the_consuming_matmul_gathers_the_rows(case, ids_dtype):
    from kernel_helpers import randomize

    layers, body = GATHERING[case]
    model = _sequential(layers, ids_dtype=ids_dtype)()
    randomize(model)
    ids = fresh_ids((BATCH, TIME), ids_dtype, torch.Generator().manual_seed(9))
    run = assert_compiled_matches_reference(model, [ids], kind="accumulating", precision="ieee")
    (first, *_) = kernels_of(run.fused)
    assert first.attrs["template"] == "matmul" and [n.op for n in first.attrs["body"].nodes] == body
    assert first.attrs["roles"][0] == "gather"
    assert "embedding" not in [n.op for n in run.fused.nodes]  # the embedded sequence is never stored


def test_a_gathering_matmul_gives_nan_rows_for_an_id_outside_the_table():
    from kcomp.codegen.module import kernel_source
    from kcomp.runtime.kernel_cache import load_kernel

    model = _sequential(lambda: [kcomp.layers.Dense(UNITS)], ids_dtype="int64")()
    fused, _ = run_pipeline(model.to_graph())
    (kernel,) = kernels_of(fused)
    params = model.params()
    ids = fresh_ids((BATCH, TIME), "int64", torch.Generator().manual_seed(10))
    ids[0, 3] = VOCAB + 5
    by_name = {v.name: v for v in kernel.inputs}
    args = [ids if v.dtype == "int64" else params[v.name] for v in kernel.inputs]
    got = load_kernel(kernel_source(kernel, 0)).launch(*args, precision="ieee")
    table, w, b = params[by_name["embedding/embeddings"].name], params["dense/kernel"], params["dense/bias"]
    assert got[0, 3].isnan().all()
    keep = torch.ones(BATCH, TIME, dtype=torch.bool)
    keep[0, 3] = False
    torch.testing.assert_close(got[keep], table[ids[keep]] @ w + b, rtol=1e-5, atol=1e-5)


def test_the_cost_model_counts_the_rows_a_gather_reads_not_the_table():
    """A large table, few ids: the gathering matmul (and the embedding) read a row per id."""
    from kcomp.ir.cost import node_bytes

    b = GraphBuilder("gathering")
    ids, table = b.input(("N", TIME), "int32", "ids"), b.input((10000, FEATURES), "float32", "table")
    kernel = b.input((FEATURES, UNITS), "float32", "kernel")
    lookup = b.emit1("embedding", [ids, table])
    graph = b.finish([b.emit1("matmul", [lookup, kernel])])
    fused, _ = run_pipeline(graph)
    (node,) = kernels_of(fused)
    assert node.attrs["roles"][0] == "gather"
    sizes, positions = {"N": BATCH}, BATCH * TIME
    rows, weights, out = positions * FEATURES * 4, FEATURES * UNITS * 4, positions * UNITS * 4
    assert node_bytes(node, sizes) == positions * 4 + rows + weights + out
    assert node_bytes(graph.nodes[0], sizes) == positions * 4 + 2 * rows
    assert node_bytes(graph.nodes[0], {"N": 10**6}) == 10**6 * TIME * 4 + 10000 * FEATURES * 4 + 10**6 * TIME * FEATURES * 4


def test_explain_shows_the_embedding_in_the_projections_kernel():
    from kcomp.compiler import BuildOptions, build_graphs, explain

    model = _sequential(lambda: [kcomp.layers.LSTM(UNITS), kcomp.layers.Dense(3, activation="softmax")])()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    lines = explain(build_graphs(model, BuildOptions(), None).fused).splitlines()
    assert lines[0] == "embedding (embedding) + lstm (matmul + bias_add) -> kernel 0 [matmul]", lines
    train = explain(build_graphs(model, BuildOptions(train=True), None).fused).splitlines()
    # In a training step the backward's d kernel = x^T dz reads the embedded sequence too: kept.
    def kernel_line(absorbed, template):
        return any(line.startswith(f"{absorbed} -> kernel ") and line.endswith(f"[{template}]") for line in train)

    assert kernel_line("embedding (embedding)", "embedding"), train
    assert kernel_line("lstm (matmul + bias_add)", "matmul"), train
    assert kernel_line("embedding/grad (embedding_grad_chunks)", "embedding_grad_chunks"), train
    assert kernel_line("embedding/grad (embedding_grad_sorted)", "embedding_grad"), train
    assert "embedding/grad (sort_ids) -> torch op in the plan (torch.sort, stable: the gradient's order of addition)" in train


# --- whole training steps, compiled, against the reference ----------------------------------------


TRAINED = {
    "lstm": lambda: [kcomp.layers.LSTM(UNITS), kcomp.layers.Dense(3, activation="softmax")],
    "dense": lambda: [kcomp.layers.Dense(UNITS, activation="tanh"), kcomp.layers.Flatten(),
                      kcomp.layers.Dense(3, activation="softmax")],
}


@pytest.mark.parametrize("case", TRAINED)
def test_compiled_training_steps_match_the_reference(case):
    rng = np.random.default_rng(11)
    x = rng.integers(0, 4, (4, TIME)).astype("int32")  # few ids: the gradient's rows sum repeats
    x[0, 0], x[-1, -1] = 0, VOCAB - 1
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_steps_match_the_reference(_sequential(TRAINED[case]), x, y, steps=2)


def test_a_training_step_runs_the_embedding_and_its_gradient_as_kernels():
    model = _sequential(TRAINED["lstm"])()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(np.ones((2, TIME), "int32"), np.eye(3, dtype="float32")[[0, 1]])
    (step,) = model._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert templates.count("embedding") == 1 and templates.count("embedding_grad") == 1
    assert templates.count("embedding_grad_chunks") == 1
    assert [i.node.op for i in step.runner.plan.instructions if i.kind == "torch" and "embedding" in i.node.origin] \
        == ["sort_ids"]


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

AOT_CASES = [("float32", "int32"), ("bfloat16", "int64")]


def compile_cases(cases) -> list[dict]:
    """The four kernels (the gather, the gathering projection, the gradient's two sums) compiled for
    sm_90 at the seed's sentiment sizes (vocabulary 10000, 32 features, 4 x 32 gates)."""
    from kcomp.runtime.aot import compile_node

    def graph(dtype, ids_dtype, kind):
        b = GraphBuilder(kind)
        ids, table = b.input(("N", 500), ids_dtype, "ids"), b.input((10000, 32), dtype, "table")
        if kind == "matmul":
            return b.finish([b.emit1("matmul", [b.emit1("embedding", [ids, table]), b.input((32, 128), dtype, "kernel")])])
        if kind == "embedding":
            return b.finish([b.emit1("embedding", [ids, table])])
        return b.finish([b.emit1("embedding_grad", [ids, b.input(("N", 500, 32), dtype, "dy")], input_dim=10000)])

    records = []
    for dtype, ids_dtype in cases:
        for kind in ("matmul", "embedding", "embedding_grad"):
            fused, _ = run_pipeline(graph(dtype, ids_dtype, kind))
            for index, node in enumerate(kernels_of(fused)):  # the gradient: its two kernels
                result = compile_node(node, index, target="sm_90", batch=32)
                records.append({"dtype": dtype, "template": node.attrs["template"], "roles": list(node.attrs["roles"]),
                                **result.resources(), "local_stores": result.local_stores()})
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=300)
    assert [(r["dtype"], r["template"]) for r in records] == [
        (d, t) for d, _ in AOT_CASES for t in ("matmul", "embedding", "embedding_grad_chunks", "embedding_grad")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0, r
        assert r["template"] != "matmul" or (r["roles"][0] == "gather" and r["tensor_cores"].get("HGMMA", 0) > 0), r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
