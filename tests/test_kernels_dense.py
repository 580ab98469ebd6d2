"""The matmul, pointwise and row templates under Triton's interpreter, against the reference.

Every case: build a model, run the pass pipeline, execute the fused graph's
plan (generated kernels) and compare with the reference executor on the
unfused graph, at ragged sizes (M=37, N=19, K=23) in float32 and float16.
"""

import pytest
import torch

from kcomp.layers import (
    Activation, Add, BatchNormalization, Dense, Embedding, Input, LayerNormalization, Permute, Reshape, Softmax,
)
from kcomp.models import Model, Sequential
from kcomp.passes import run_pipeline
from kcomp.runtime.plan import Plan
from kcomp.runtime.reference import run_reference

from kernel_helpers import (
    INF, NAN, assert_compiled_matches_reference, assert_matches_reference, kernels_of, randomize, with_nonfinite,
)

EPILOGUE_ACTIVATIONS = [
    "relu", "sigmoid", "tanh", "gelu", "elu", "selu", "softplus", "softsign", "leaky_relu", "silu",
    "hard_sigmoid", "hard_silu", "mish", "exponential", "relu6", None,
]


@pytest.mark.parametrize("activation", EPILOGUE_ACTIVATIONS)
def test_dense_activation_is_one_kernel(activation):
    model = Sequential([Input(shape=(23,)), Dense(19, activation=activation)])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [torch.randn(37, 23)], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == "matmul"
    assert len([n for n in graph.nodes if n.op != "kernel"]) == 0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_dense_batchnorm_residual_fold_into_the_epilogue(dtype):
    x_in = Input(shape=(23,), dtype=dtype)
    h = Dense(23, activation="relu", dtype=dtype)(x_in)
    h = BatchNormalization(dtype=dtype)(h)
    y = Activation("tanh", dtype=dtype)(Add(dtype=dtype)([h, x_in]))  # (a float32 layer would cast float16 up, as Keras's)
    model = Model(x_in, y)
    randomize(model)
    x = torch.randn(37, 23).to(getattr(torch, dtype))
    graph = assert_compiled_matches_reference(model, [x], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    ops = [n.op for n in kernel.attrs["body"].nodes]
    assert ops[:3] == ["matmul", "bias_add", "relu"] and "add" in ops and ops[-1] == "tanh"


def test_dense_on_sequences_and_batch_sizes():
    model = Sequential([Input(shape=(5, 23)), Dense(19, activation="silu"), Dense(7)])
    randomize(model)
    executor = None
    for batch in (1, 3, 8):  # one plan, every batch size
        x = torch.randn(batch, 5, 23)
        executor = assert_compiled_matches_reference(model, [x], kind="accumulating", executor=executor).executor


def test_softmax_and_log_softmax_rows():
    x_in = Input(shape=(19,))
    logits = Dense(37)(x_in)
    model = Model(x_in, [Softmax()(logits), Activation("log_softmax")(logits)])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [torch.randn(13, 19) * 3], kind="accumulating").fused
    assert sorted(k.attrs["template"] for k in kernels_of(graph)) == ["matmul", "softmax", "softmax"]


@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False), (False, False)])
def test_layer_norm_rows(center, scale):
    model = Sequential([Input(shape=(4, 37)), LayerNormalization(center=center, scale=scale, epsilon=1e-5)])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [torch.randn(3, 4, 37) * 2 + 1], kind="elementwise").fused
    assert [k.attrs["template"] for k in kernels_of(graph)] == ["layer_norm"]


def test_pointwise_chain_after_an_embedding():
    # The activations after an embedding are its kernel's epilogue: the rows go through them once.
    model = Sequential([Embedding(11, 19, input_length=5), Activation("gelu"), Activation("softsign"), Reshape((95,))])
    randomize(model)
    ids = torch.randint(0, 11, (3, 5), dtype=torch.int32)
    graph = assert_compiled_matches_reference(model, [ids], kind="elementwise").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == "embedding"
    assert [n.op for n in kernel.attrs["body"].nodes] == ["embedding", "gelu", "softsign"]


def test_pointwise_with_vector_and_full_operands():
    a, b = Input(shape=(7, 19)), Input(shape=(7, 19))
    s = Activation("sigmoid")(Add()([a, b]))
    model = Model([a, b], BatchNormalization()(s))
    randomize(model)
    graph = assert_compiled_matches_reference(model, [torch.randn(5, 7, 19), torch.randn(5, 7, 19)],
                                              kind="elementwise").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == "pointwise"


def test_buffers_are_reused_and_peak_memory_reported():
    model = Sequential([Input(shape=(64,))] + [Dense(64, activation="relu") for _ in range(6)])
    randomize(model)
    plan = assert_compiled_matches_reference(model, [torch.randn(8, 64)], kind="deep").executor.plan
    one = 8 * 64 * 4
    assert plan.last_peak_bytes == 2 * one  # two activations alive at a time, not six


def test_weight_only_nodes_run_once_per_weight_update():
    model = Sequential([Input(shape=(19,)), Dense(19), BatchNormalization()])
    randomize(model)
    graph, _ = run_pipeline(model.to_graph())
    plan = Plan(graph)
    x = torch.randn(4, 19)
    first = plan.run([x], model.params())[0].clone()
    prepared = plan._prepared_for
    plan.run([x], model.params())
    assert plan._prepared_for == prepared
    bn = model.layers[1]
    bn.set_weights([w * 2 for w in bn.get_weights()])
    second = plan.run([x], model.params())[0]
    assert plan._prepared_for != prepared
    assert_matches_reference([second], run_reference(model.to_graph(), [x], model.params()), kind="accumulating")
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ops_before_a_dense_fuse_into_its_prologue(dtype):
    x, s = Input(shape=(23,), dtype=dtype), Input(shape=(23,), dtype=dtype)
    h = Activation("exponential", dtype=dtype)(Add(dtype=dtype)([x, s]))  # exp(0) = 1 on the padded K columns must not leak
    h = BatchNormalization(dtype=dtype)(h)
    model = Model([x, s], Dense(19, activation="relu", dtype=dtype)(h))
    randomize(model)
    xs = [(torch.randn(37, 23) * 0.5).to(getattr(torch, dtype)) for _ in range(2)]
    graph = assert_compiled_matches_reference(model, xs, kind="accumulating").fused
    matmul = next(k for k in kernels_of(graph) if k.attrs["template"] == "matmul")
    ops = [n.op for n in matmul.attrs["body"].nodes if n.op != "constant"]
    assert ops == ["exponential", "mul", "add", "matmul", "bias_add", "relu"]
    assert [k.attrs["template"] for k in kernels_of(graph)] == ["pointwise", "matmul"]  # the add of two inputs


def test_a_view_returned_by_a_torch_op_keeps_its_buffer_alive():
    # Permute runs on torch and returns a view of the Dense's pooled buffer; the next
    # same-sized kernel output must not take that buffer while the view is an output.
    x = Input(shape=(4, 6))
    a = Dense(6, activation="relu")(x)
    p = Permute((2, 1))(a)
    model = Model(x, [p, Dense(4, activation="tanh")(p)])
    randomize(model)
    assert_compiled_matches_reference(model, [torch.randn(2, 4, 6)], kind="accumulating")


def test_peak_memory_counts_torch_fallback_outputs():
    from kcomp.layers import Concatenate

    x = Input(shape=(64,))
    model = Model(x, Dense(8)(Concatenate()([Dense(64)(x), Dense(64)(x)])))
    graph, _ = run_pipeline(model.to_graph())
    plan = Plan(graph)
    plan.run([torch.randn(16, 64)], model.params())
    assert plan.last_peak_bytes >= 16 * 128 * 4  # the concat's output (a torch op) is counted


@pytest.mark.parametrize("units, activation, dtype", [(10, "softmax", "float32"), (37, "log_softmax", "float32"),
                                                      (19, "softmax", "float16")])
def test_dense_with_softmax_is_one_kernel(units, activation, dtype):
    model = Sequential([Input(shape=(23,), dtype=dtype), Dense(units, activation=activation, dtype=dtype)])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [(torch.randn(37, 23) * 2).to(getattr(torch, dtype))],
                                              kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert [n.op for n in kernel.attrs["body"].nodes] == ["matmul", "bias_add", activation]


def test_a_row_wider_than_an_epilogue_tile_gets_its_own_softmax_kernel():
    model = Sequential([Input(shape=(23,)), Dense(300, activation="softmax")])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [torch.randn(5, 23)], kind="accumulating").fused
    assert [k.attrs["template"] for k in kernels_of(graph)] == ["matmul", "softmax"]


@pytest.mark.parametrize("transposed", ["a", "b", "both"])
def test_transposed_operands_are_read_through_strides(transposed):
    """A weight gradient multiplies activations^T: the transpose is a view the matmul kernel
    reads through its strides (no copy kernel), and the result equals the reference."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("transposed")
    x = b.input((37, 23), "float32", "x")  # read as A^T: (23, 37)
    y = b.input((19, 37) if transposed != "a" else (37, 19), "float32", "y")
    a = b.emit1("transpose", [x], perm=(1, 0))
    w = b.emit1("transpose", [y], perm=(1, 0)) if transposed != "a" else y
    if transposed == "b":
        a = b.emit1("relu", [b.emit1("transpose", [x], perm=(1, 0))])  # a prologue on a strided A
    graph = b.finish([b.emit1("matmul", [a, w])])
    g = torch.Generator().manual_seed(4)
    inputs = [torch.randn(37, 23, generator=g), torch.randn(*y.shape, generator=g)]
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    (kernel,) = kernels_of(run.fused)
    assert kernel.attrs["template"] == "matmul"
    assert {s.node.op for s in run.executor.plan.instructions if s.kind == "view"} == {"transpose"}


def weight_and_bias_gradients():
    """The graph of dW = h^T @ dz and db = sum(dz, axis 0)."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("weight_and_bias_gradients")
    h = b.input((None, 70), "float32", "h")
    dz = b.input((None, 37), "float32", "dz")
    dw = b.emit1("matmul", [b.emit1("transpose", [h], perm=(1, 0)), dz])
    db = b.emit1("sum", [dz], axes=(0,), keepdims=False)
    return b.finish([dw, db])


def assert_one_matmul_kernel_writes_both(fused):
    (kernel,) = kernels_of(fused)
    assert [n.op for n in kernel.attrs["body"].nodes] == ["matmul", "sum"] and len(kernel.outputs) == 2


def test_bias_gradient_is_a_second_output_of_the_weight_gradient_kernel():
    """dW = h^T @ dz and db = sum(dz, axis 0): one matmul kernel writes both (B's column sums
    accumulate as its tiles load). M spans several tile rows, N and K are ragged."""
    g = torch.Generator().manual_seed(5)
    inputs = [torch.randn(23, 70, generator=g), torch.randn(23, 37, generator=g)]
    run = assert_compiled_matches_reference(weight_and_bias_gradients(), inputs, kind="accumulating", precision="ieee")
    assert_one_matmul_kernel_writes_both(run.fused)


def test_a_pointwise_kernel_widens_from_one_element_to_the_batch():
    """A mean's gradient, 1 / count spread over the batch and weighted per sample, is one
    pointwise kernel: its first op works on one element, the rest on the whole batch."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("spread")
    one = b.input((1,), "float32", "one")
    sw = b.input((None,), "float32", "sample_weight")
    scale = b.emit1("div", [one, b.emit1("count", [sw], axes=(0,))])
    g = b.emit1("mul", [b.emit1("broadcast_like", [scale, sw]), sw])
    graph = b.finish([g])
    inputs = [torch.tensor([3.0]), torch.rand(37) + 0.5]
    fused = assert_compiled_matches_reference(graph, inputs, kind="exact").fused  # div, then mul: as torch rounds
    pointwise = [k for k in kernels_of(fused) if k.attrs["template"] == "pointwise"]
    assert len(pointwise) == 1 and [n.op for n in pointwise[0].attrs["body"].nodes] == ["div", "broadcast_like", "mul"]


@pytest.mark.parametrize("op", ["square", "abs", "sqrt", "log", "sign", "power2", "power3", "power-1", "power0.5", "power0"])
def test_losses_math_runs_in_pointwise_kernels(op):
    """The math losses and regularizers are written in (kcomp/ir/ops/loss_math.py) fuses like any
    elementwise op (sign: L1's gradient, 0 at 0 and NaN as torch.sign)."""
    from kcomp.ir.builder import GraphBuilder

    b = GraphBuilder("math")
    x = b.input((None, 19), "float32", "x")
    attrs = {"exponent": float(op[len("power"):])} if op.startswith("power") else {}
    graph = b.finish([b.emit1("mul", [b.emit1(op[:5] if attrs else op, [x], **attrs), x])])
    positive = op in ("sqrt", "log", "power0.5")
    inputs = [torch.rand(37, 19, generator=torch.Generator().manual_seed(2)) * 3 - (0 if positive else 1.5) + 0.01]
    if op == "sign":
        inputs[0][0, :3] = torch.tensor([0.0, -0.0, float("nan")])
    (kernel,) = kernels_of(assert_compiled_matches_reference(graph, inputs, kind="elementwise").fused)
    assert kernel.attrs["template"] == "pointwise"


# -- NaN and inf: each kernel passes them on as the reference does --------------------------
# Triton's minimum / maximum drop a NaN where torch's clamp, maximum and relu keep it: a model
# whose weights went to NaN must show it in its outputs and its loss.


@pytest.mark.parametrize("activation", EPILOGUE_ACTIVATIONS + ["softmax", "log_softmax"])
def test_dense_epilogue_passes_nan_and_inf_on(activation):
    """Rows of x holding a NaN, a +inf or a -inf give rows of NaN and of +-inf before the
    activation; each activation's kernel expression treats them as the reference does."""
    model = Sequential([Input(shape=(23,)), Dense(19, activation=activation)])
    randomize(model)
    x = with_nonfinite(torch.randn(37, 23))
    graph = assert_compiled_matches_reference(model, [x], kind="accumulating", float64_reference=True).fused
    assert [k.attrs["template"] for k in kernels_of(graph)] == ["matmul"]


POINTWISE_CASES = [
    ("relu", {}), ("relu", dict(max_value=6.0)), ("relu", dict(threshold=0.5)), ("relu", dict(threshold=-0.5)),
    ("relu", dict(max_value=2.0, negative_slope=0.1, threshold=0.5)), ("relu", dict(negative_slope=0.2)),
    ("hard_sigmoid", {}), ("hard_silu", {}), ("softplus", {}), ("mish", {}), ("elu", {}), ("selu", {}),
    ("leaky_relu", {}), ("silu", {}), ("sigmoid", {}), ("tanh", {}), ("softsign", {}), ("exponential", {}),
    ("gelu", dict(approximate=True)), ("gelu", dict(approximate=False)), ("sign", {}), ("abs", {}),
    ("square", {}), ("sqrt", {}), ("log", {}), ("rsqrt", {}), ("neg", {}), ("erf", {}),
    ("power", dict(exponent=3.0)), ("power", dict(exponent=-1.0)), ("power", dict(exponent=0.0)),
    ("power", dict(exponent=0.5)),
    ("maximum", {}), ("minimum", {}), ("add", {}), ("sub", {}), ("mul", {}), ("div", {}), ("zeros_where_masked", {}),
    ("greater", {}), ("equal", {}), ("is_finite", {}),
]


@pytest.mark.parametrize("op, attrs", POINTWISE_CASES, ids=[f"{op}{attrs or ''}" for op, attrs in POINTWISE_CASES])
def test_pointwise_expressions_pass_nan_and_inf_on(op, attrs):
    """Every elementwise op's kernel expression on NaN, +inf, -inf, 0 and ordinary values; a binary
    op gets them in either operand (maximum(NaN, 1) and maximum(1, NaN) are both NaN in torch)."""
    from kcomp.ir.builder import GraphBuilder
    from kcomp.ir.registry import OPS

    b = GraphBuilder(op)
    binary = "binary" in OPS[op].traits
    operands = [b.input((None, 19), "float32", name) for name in ("x", "y")[: 2 if binary else 1]]
    graph = b.finish([b.emit1(op, operands, **attrs)])
    g = torch.Generator().manual_seed(6)
    values = [NAN, INF, -INF, 0.0, 2.5, -2.5]
    xs = with_nonfinite(torch.randn(37, 19, generator=g) * 3, places=values * 2)
    ys = with_nonfinite(torch.randn(37, 19, generator=g) * 3, places=values[::-1] + values)  # mixed pairs
    xs[:6, 0] = torch.tensor(values)  # every pair of special values, both ways round
    ys[:6, 0] = torch.tensor(values[::-1])
    xs[6:12, 0] = torch.tensor(values)
    ys[6:12, 0] = torch.tensor(values)
    inputs = [xs, ys] if binary else [xs]
    fused = assert_compiled_matches_reference(graph, inputs, kind="elementwise", float64_reference=True).fused
    assert [k.attrs["template"] for k in kernels_of(fused)] == ["pointwise"]


def test_softmax_rows_pass_nan_and_inf_on():
    """A row with a NaN or a +inf is NaN throughout (torch); a -inf is a zero probability."""
    x_in = Input(shape=(37,))
    model = Model(x_in, [Softmax()(x_in), Activation("log_softmax")(x_in)])
    x = with_nonfinite(torch.randn(13, 37) * 3)
    x[11, 5] = x[12, :] = -INF  # a row all -inf: NaN in torch (-inf - -inf)
    graph = assert_compiled_matches_reference(model, [x], kind="elementwise", float64_reference=True).fused
    assert sorted(k.attrs["template"] for k in kernels_of(graph)) == ["softmax", "softmax"]


def test_layer_norm_rows_pass_nan_and_inf_on():
    model = Sequential([Input(shape=(4, 37)), LayerNormalization(epsilon=1e-5)])
    randomize(model)
    assert_compiled_matches_reference(model, [with_nonfinite(torch.randn(3, 4, 37))], kind="elementwise",
                                      float64_reference=True)


def test_weight_and_bias_gradients_pass_nan_and_inf_on():
    """dW = h^T @ dz and db = sum(dz) in one matmul kernel, with a NaN and infinities in dz and h."""
    g = torch.Generator().manual_seed(5)
    inputs = [with_nonfinite(torch.randn(23, 70, generator=g), places=(INF,)),
              with_nonfinite(torch.randn(23, 37, generator=g), places=(NAN, -INF))]
    run = assert_compiled_matches_reference(weight_and_bias_gradients(), inputs, kind="accumulating",
                                            float64_reference=True, precision="ieee")
    assert_one_matmul_kernel_writes_both(run.fused)
