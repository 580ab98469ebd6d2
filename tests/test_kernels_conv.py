"""The conv2d template (implicit GEMM + epilogue + fused 'valid' pool) under Triton's interpreter.

Every case: build a model, run the pass pipeline, check which kernel the conv
became (its body's ops), execute the fused graph's plan (generated kernels) and
compare with the reference executor on the unfused graph. Sizes are ragged:
9x11 images, 3/5/7 channels and filters, batch 2-3, and a few cases wide
enough for several row, filter and K tiles (F=37 > BN, K=63 > BK, M > BM*GROUP_M).
"""

import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.layers import (
    Activation, Add, AveragePooling2D, BatchNormalization, Conv2D, Input, MaxPooling2D,
)
from kcomp.models import Model
from kcomp.passes import run_pipeline
from kcomp.runtime.kernel_cache import load_kernel
from kcomp.runtime.reference import run_reference

from kernel_helpers import (
    NAN, assert_compiled_matches_reference, assert_matches_reference, kernels_of, randomize, with_nonfinite,
)


# -- helpers (tests/test_kernels_reduce_pool.py uses them too) --------------------


def body_ops(kernel):
    return [n.op for n in kernel.attrs["body"].nodes if n.op != "constant"]


def image(batch, shape, dtype="float32", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g).to(getattr(torch, dtype))


def conv_model(shape, conv, after=(), dtype="float32"):
    """Input -> Conv2D(**conv) -> each layer in `after`, with random weights."""
    x = Input(shape=shape, dtype=dtype)
    y = Conv2D(**conv, dtype=dtype)(x)
    for make in after:
        y = make(dtype)(y)
    model = Model(x, y)
    randomize(model)
    return model


def BN(dtype):  # noqa: N802 - a layer factory
    return BatchNormalization(dtype=dtype)


def act(name):
    return lambda dtype: Activation(name, dtype=dtype)


def maxpool(size, strides=None, padding="valid"):
    return lambda dtype: MaxPooling2D(size, strides, padding, dtype=dtype)


def avgpool(size, strides=None, padding="valid"):
    return lambda dtype: AveragePooling2D(size, strides, padding, dtype=dtype)


# -- conv + epilogue --------------------------------------------------------------
EPILOGUE_CASES = {
    "3x3-valid-bias-relu": ((9, 11, 3), dict(filters=5, kernel_size=3, activation="relu"), [],
                            ["conv2d", "bias_add", "relu"]),
    "3x3-same-stride2-gelu": ((9, 11, 3), dict(filters=7, kernel_size=3, strides=2, padding="same", activation="gelu"),
                              [], ["conv2d", "bias_add", "gelu"]),
    "5x3-same-dilation2-nobias": ((9, 11, 5), dict(filters=3, kernel_size=(5, 3), dilation_rate=2, padding="same",
                                                   use_bias=False), [], ["conv2d"]),
    "5x3-valid-dilation(1,2)": ((9, 11, 3), dict(filters=5, kernel_size=(5, 3), dilation_rate=(1, 2)),
                                [], ["conv2d", "bias_add"]),
    "1x1-valid-stride2": ((9, 11, 7), dict(filters=5, kernel_size=1, strides=2), [], ["conv2d", "bias_add"]),
    # A 1x1 conv with unit strides is a matmul of the channels (the decompose pass).
    "1x1-same": ((9, 11, 5), dict(filters=7, kernel_size=1, padding="same", activation="tanh"), [],
                 ["matmul", "bias_add", "tanh"]),
    "3x3-same-stride-2x1-bn-relu": ((9, 11, 5), dict(filters=7, kernel_size=3, strides=(2, 1), padding="same"),
                                    [BN, act("relu")], ["conv2d", "bias_add", "mul", "add", "relu"]),
    "3x3-same-stride2-even-padding": ((10, 12, 3), dict(filters=5, kernel_size=3, strides=2, padding="same"),
                                      [], ["conv2d", "bias_add"]),
    # Several filter tiles (F > BN), K steps (K = 63 > BK) and row-tile groups (M = 297 > BM * GROUP_M).
    "wide-3x3-same-bn-silu": ((9, 11, 7), dict(filters=37, kernel_size=3, padding="same", activation="silu"),
                              [BN], ["conv2d", "bias_add", "silu", "mul", "add"]),
}


@pytest.mark.parametrize("case", list(EPILOGUE_CASES))
def test_conv_epilogue_is_one_kernel(case):
    shape, conv, after, ops = EPILOGUE_CASES[case]
    model = conv_model(shape, conv, after)
    graph = assert_compiled_matches_reference(model, [image(3, shape)], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == ("matmul" if ops[0] == "matmul" else "conv2d")
    assert body_ops(kernel) == ops


def test_conv_residual_add_reads_a_full_operand():
    x = Input(shape=(9, 11, 5))
    h = Conv2D(5, 3, padding="same")(x)
    h = BatchNormalization()(h)
    y = Activation("relu")(Add()([h, x]))
    model = Model(x, y)
    randomize(model)
    graph = assert_compiled_matches_reference(model, [image(2, (9, 11, 5))], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert body_ops(kernel) == ["conv2d", "bias_add", "mul", "add", "add", "relu"]


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_ir_strides_with_dilation(padding):
    # Keras's Conv2D refuses strides > 1 with dilation > 1; the IR op and the template take both.
    b = GraphBuilder("conv")
    x = b.input((None, 11, 9, 5), "float32", "x")
    w = b.param("w", (3, 2, 5, 7), "float32", "w")
    y = b.emit1("conv2d", [x, w], strides=(2, 3), padding=padding, dilation=(2, 2))
    graph = b.finish([b.emit1("relu", [y])])
    inputs, params = [image(2, (11, 9, 5))], {"w": image(3, (2, 5, 7), seed=1)}
    fused = assert_compiled_matches_reference(graph, inputs, params, kind="accumulating").fused
    (kernel,) = kernels_of(fused)
    assert body_ops(kernel) == ["conv2d", "relu"]


# -- conv + epilogue + fused pool ----------------------------------------------------
POOL_CASES = {
    "3x3-relu-max2x2": ((9, 11, 3), dict(filters=5, kernel_size=3, activation="relu"), [maxpool(2)],
                        ["conv2d", "bias_add", "relu", "max_pool2d"]),
    "same-gelu-avg3x3-stride2": ((9, 11, 3), dict(filters=7, kernel_size=3, padding="same", activation="gelu"),
                                 [avgpool(3, 2)], ["conv2d", "bias_add", "gelu", "avg_pool2d"]),
    "same-bn-relu-max3x3-stride1": ((9, 11, 5), dict(filters=3, kernel_size=3, padding="same"),
                                    [BN, act("relu"), maxpool(3, 1)],
                                    ["conv2d", "bias_add", "mul", "add", "relu", "max_pool2d"]),
    "5x3-dilation2-avg2x2": ((9, 11, 3), dict(filters=5, kernel_size=(5, 3), dilation_rate=2, padding="same"),
                             [avgpool(2)], ["conv2d", "bias_add", "avg_pool2d"]),
    "1x1-stride2-max3x3-stride2": ((9, 11, 7), dict(filters=5, kernel_size=1, strides=2, activation="relu"),
                                   [maxpool(3, 2)], ["conv2d", "bias_add", "relu", "max_pool2d"]),
    # Negative pre-pool values: max must not clip at 0 (no relu before it).
    "no-activation-max2x2-stride(1,2)": ((9, 11, 3), dict(filters=5, kernel_size=3), [maxpool(2, (1, 2))],
                                         ["conv2d", "bias_add", "max_pool2d"]),
    "wide-bn-max2x2": ((9, 11, 7), dict(filters=37, kernel_size=3, padding="same"), [BN, maxpool(2)],
                       ["conv2d", "bias_add", "mul", "add", "max_pool2d"]),
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_conv_absorbs_a_valid_pool(case):
    shape, conv, after, ops = POOL_CASES[case]
    model = conv_model(shape, conv, after)
    graph = assert_compiled_matches_reference(model, [image(3, shape)], kind="accumulating").fused
    (kernel,) = kernels_of(graph)  # the pre-pool activation is never a graph value
    assert kernel.attrs["template"] == "conv2d"
    assert body_ops(kernel) == ops


@pytest.mark.parametrize(
    "conv, after, ops",
    [
        (dict(filters=5, kernel_size=3, activation="relu"), [maxpool(2)], ["conv2d", "bias_add", "relu", "max_pool2d"]),
        (dict(filters=7, kernel_size=3, padding="same"), [BN, act("gelu"), avgpool(3, 2)],
         ["conv2d", "bias_add", "mul", "add", "gelu", "avg_pool2d"]),
        (dict(filters=5, kernel_size=(5, 3), strides=2, padding="same", activation="relu"), [], ["conv2d", "bias_add", "relu"]),
    ],
)
def test_conv_float16(conv, after, ops):
    shape = (9, 11, 3)
    model = conv_model(shape, conv, after, dtype="float16")
    graph = assert_compiled_matches_reference(model, [image(2, shape, "float16")], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert body_ops(kernel) == ops


def test_conv_float16_residual():
    x = Input(shape=(9, 11, 5), dtype="float16")
    h = Conv2D(5, 3, padding="same", dtype="float16")(x)
    model = Model(x, Add(dtype="float16")([h, x]))
    randomize(model)
    graph = assert_compiled_matches_reference(model, [image(2, (9, 11, 5), "float16")], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert body_ops(kernel) == ["conv2d", "bias_add", "add"]


# -- what stays outside the conv kernel ----------------------------------------------
def test_same_pool_is_not_absorbed_and_runs_as_a_pool_kernel():
    model = conv_model((9, 11, 3), dict(filters=5, kernel_size=3, activation="relu"), [maxpool(3, 2, "same")])
    graph = assert_compiled_matches_reference(model, [image(2, (9, 11, 3))], kind="accumulating").fused
    conv, pool = kernels_of(graph)
    assert (conv.attrs["template"], body_ops(conv)) == ("conv2d", ["conv2d", "bias_add", "relu"])
    assert (pool.attrs["template"], body_ops(pool)) == ("pool2d", ["max_pool2d"])


def test_residual_then_pool_keeps_the_pool_separate():
    # A "full" epilogue operand indexes pre-pool pixels; fuse never combines it with a pool.
    x = Input(shape=(9, 11, 5))
    h = Add()([Conv2D(5, 3, padding="same")(x), x])
    model = Model(x, AveragePooling2D(2)(h))
    randomize(model)
    graph = assert_compiled_matches_reference(model, [image(2, (9, 11, 5))], kind="accumulating").fused
    assert [(k.attrs["template"], body_ops(k)) for k in kernels_of(graph)] == [
        ("conv2d", ["conv2d", "bias_add", "add"]),
        ("pool2d", ["avg_pool2d"]),
    ]


# -- run time sizes and the template's launch --------------------------------------
def test_one_plan_serves_every_batch_size():
    model = conv_model((9, 11, 3), dict(filters=5, kernel_size=3, strides=2, padding="same", activation="relu"),
                       [BN, maxpool(2)])
    executor = None
    for batch in (1, 3, 2):
        x = image(batch, (9, 11, 3), seed=batch)
        run = assert_compiled_matches_reference(model, [x], kind="accumulating", executor=executor)
        executor = run.executor
        assert run.got[0].shape == (batch, 2, 3, 5)


def test_launch_allocates_its_output_and_reads_any_input_layout():
    model = conv_model((9, 11, 5), dict(filters=7, kernel_size=3, padding="same", activation="relu"), [avgpool(2)])
    graph, _ = run_pipeline(model.to_graph())
    (kernel,) = kernels_of(graph)
    source = kernel_source(kernel, 0)
    # The avg pool is absorbed; the image, kernel and bias are inputs 0, 1 and 2.
    assert "pool='avg'," in source.text and "x=0,\n    w=1,\n" in source.text and "Operand(input_index=2," in source.text
    # A channels-first tensor permuted to NHWC: not contiguous; the template's launch copies it.
    x = image(2, (5, 9, 11)).permute(0, 2, 3, 1)
    params = model.params()
    got = load_kernel(source).launch(x, params["conv2d/kernel"], params["conv2d/bias"])
    (want,) = run_reference(model.to_graph(), [x.contiguous()], params)
    assert want.shape == (2, 4, 5, 7)
    assert_matches_reference([got], [want], kind="accumulating")


@pytest.mark.parametrize("pool, coverable", [
    (dict(pool_size=2), True),  # 8x10 in 2x2 windows
    (dict(pool_size=3, strides=1), True),  # overlapping windows: pixels computed again, stored again
    (dict(pool_size=3, strides=2), False),  # 8 - 3 is odd: the last row is in no window
])
def test_conv_pool_also_stores_the_pre_pool_activation_others_read(pool, coverable):
    """A training step reads a conv's activation (for the gradients) as well as its pool: the
    conv kernel still pools, writing both outputs, when the windows cover the activation."""
    x = Input(shape=(8, 10, 3))
    a = Conv2D(5, 3, padding="same", activation="relu")(x)
    model = Model(x, [MaxPooling2D(**pool)(a), a])
    randomize(model)
    graph = assert_compiled_matches_reference(model, [image(2, (8, 10, 3)) - 0.5], kind="accumulating").fused
    first = kernels_of(graph)[0]
    if coverable:
        assert body_ops(first)[-1] == "max_pool2d" and len(first.outputs) == 2
        # Into NaN-poisoned buffers: every element of both outputs is written.
        module = load_kernel(kernel_source(first, 0))
        inputs = [image(2, (8, 10, 3)) - 0.5] + [model.params()[p.name] for p in first.inputs[1:]]
        outs = tuple(torch.full(tuple(2 if d == "N" else d for d in v.shape), float("nan")) for v in first.outputs)
        module.launch(*inputs, out=outs, precision="ieee")
        assert not any(torch.isnan(o).any() for o in outs)
    else:
        assert "max_pool2d" not in body_ops(first)


# -- NaN and inf: passed on as the reference does -------------------------------------
NONFINITE_CASES = {
    "3x3-valid-bias-relu": EPILOGUE_CASES["3x3-valid-bias-relu"],
    "3x3-same-stride-2x1-bn-relu": EPILOGUE_CASES["3x3-same-stride-2x1-bn-relu"],
    "3x3-relu-max2x2": POOL_CASES["3x3-relu-max2x2"],
    "no-activation-max2x2-stride(1,2)": POOL_CASES["no-activation-max2x2-stride(1,2)"],
    "same-gelu-avg3x3-stride2": POOL_CASES["same-gelu-avg3x3-stride2"],
}


@pytest.mark.parametrize("case", list(NONFINITE_CASES))
def test_conv_kernel_passes_nan_and_inf_on(case):
    """Pixels of NaN, +inf and -inf in the image, and a filter whose weights went to NaN: the conv,
    its epilogue (relu keeps a NaN) and its fused pool (a NaN in a window wins) as the reference."""
    shape, conv, after, ops = NONFINITE_CASES[case]
    model = conv_model(shape, conv, after)
    kernel = model.layers[1].weights[0]
    value = kernel.numpy().copy()
    value[..., 1] = NAN  # filter 1
    kernel.assign(value)
    x = with_nonfinite(image(2, shape))
    graph = assert_compiled_matches_reference(model, [x], kind="accumulating", float64_reference=True).fused
    (kernel_node,) = kernels_of(graph)
    assert body_ops(kernel_node) == ops
