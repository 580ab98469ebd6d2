"""The pool2d and reduce templates under Triton's interpreter, against the reference.

Pools the conv could not absorb ('same' padding, a pool of an input) run on
the pool2d template; sum / mean / max over consecutive axes (global pooling
among them) on the reduce template. Sizes are ragged, and some cases span
several pixel, channel and reduction blocks.
"""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.layers import (
    AveragePooling2D, Conv2D, GlobalAveragePooling2D, GlobalMaxPooling2D, Input, MaxPooling2D,
)
from kcomp.models import Model

from kernel_helpers import INF, NAN, assert_compiled_matches_reference, with_nonfinite
from test_kernels_conv import body_ops, image, kernels_of, randomize


def single_layer(layer, shape, dtype="float32"):
    x = Input(shape=shape, dtype=dtype)
    return Model(x, layer(x))


# -- standalone pools ---------------------------------------------------------------
POOLS = {
    "max3x3-stride2-same": (MaxPooling2D, dict(pool_size=3, strides=2, padding="same")),
    "avg3x3-stride2-same": (AveragePooling2D, dict(pool_size=3, strides=2, padding="same")),
    "avg3x3-stride1-same": (AveragePooling2D, dict(pool_size=3, strides=1, padding="same")),
    "max2x2-same": (MaxPooling2D, dict(pool_size=2, padding="same")),
    "avg2x2-same": (AveragePooling2D, dict(pool_size=2, padding="same")),
    "avg(3,2)-stride(2,1)-same": (AveragePooling2D, dict(pool_size=(3, 2), strides=(2, 1), padding="same")),
    "max2x2-valid": (MaxPooling2D, dict(pool_size=2)),
    "avg3x3-stride2-valid": (AveragePooling2D, dict(pool_size=3, strides=2)),
    "max(3,2)-stride(1,2)-valid": (MaxPooling2D, dict(pool_size=(3, 2), strides=(1, 2))),
}


@pytest.mark.parametrize("case", list(POOLS))
@pytest.mark.parametrize("channels", [5, 37])  # 37: several channel blocks
def test_pool_kernel(case, channels):
    layer, kwargs = POOLS[case]
    shape = (9, 11, channels)
    model = single_layer(layer(**kwargs), shape)
    graph = assert_compiled_matches_reference(model, [image(3, shape)], kind="elementwise").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == "pool2d"
    assert body_ops(kernel) == ["max_pool2d" if layer is MaxPooling2D else "avg_pool2d"]


def test_max_pool_padding_never_wins_over_negative_pixels():
    model = single_layer(MaxPooling2D(3, 2, padding="same"), (9, 11, 5))
    x = -10.0 - image(2, (9, 11, 5)).abs()  # every pixel below 0: a zero pad would show
    assert_compiled_matches_reference(model, [x], kind="elementwise")


@pytest.mark.parametrize("layer", [MaxPooling2D, AveragePooling2D])
def test_pool_float16(layer):
    model = single_layer(layer(3, 2, padding="same", dtype="float16"), (9, 11, 7), "float16")
    assert_compiled_matches_reference(model, [image(2, (9, 11, 7), "float16")], kind="elementwise")


# -- reductions ---------------------------------------------------------------------
def reduction_graph(op, axes, keepdims, shape, dtype="float32"):
    b = GraphBuilder("reduction")
    x = b.input((None, *shape), dtype, "x")
    return b.finish([b.emit1(op, [x], axes=axes, keepdims=keepdims)])


REDUCTIONS = [
    ((1, 2), False), ((1, 2), True), ((1,), False), ((2,), True), ((0,), False), ((0,), True),
    ((3,), False), ((-1,), True), ((0, 1), False), ((1, 2, 3), False), (None, False), (None, True),
]


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("axes, keepdims", REDUCTIONS)
def test_reduce_kernel(op, axes, keepdims):
    shape = (9, 11, 5)
    x = image(3, shape) - 0.5  # mostly negative: a max seeded with 0 would show
    fused = assert_compiled_matches_reference(reduction_graph(op, axes, keepdims, shape), [x], kind="long").fused
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "reduce" and body_ops(kernel) == [op]


@pytest.mark.parametrize("op, axes", [("sum", (1,)), ("mean", (2,)), ("max", (1, 2))])
def test_reduce_long_rows(op, axes):
    # R = 70 / 45 / 3150 spans several BLOCK_R chunks, a ragged last one.
    assert_compiled_matches_reference(reduction_graph(op, axes, False, (70, 45)), [image(2, (70, 45))], kind="long")


def test_reduce_over_no_axes_copies():
    graph = reduction_graph("sum", (), False, (9, 11, 5))
    assert_compiled_matches_reference(graph, [image(2, (9, 11, 5))], kind="exact")  # a copy: bit for bit


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduce_float16(op):
    shape = (9, 11, 7)
    graph = reduction_graph(op, (1, 2), False, shape, "float16")
    assert_compiled_matches_reference(graph, [image(2, shape, "float16")], kind="long")


@pytest.mark.parametrize("layer", [GlobalAveragePooling2D, GlobalMaxPooling2D])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_layers(layer, keepdims):
    model = single_layer(layer(keepdims=keepdims), (9, 11, 5))
    graph = assert_compiled_matches_reference(model, [image(3, (9, 11, 5))], kind="accumulating").fused
    (kernel,) = kernels_of(graph)
    assert kernel.attrs["template"] == "reduce"
    assert body_ops(kernel) == ["mean" if layer is GlobalAveragePooling2D else "max"]


def test_conv_then_global_average_pool_batch_sizes():
    x = Input(shape=(9, 11, 3))
    y = GlobalAveragePooling2D()(Conv2D(7, 3, padding="same", activation="relu")(x))
    model = Model(x, y)
    randomize(model)
    executor = None
    for batch in (2, 3):  # one plan, every batch size
        run = assert_compiled_matches_reference(model, [image(batch, (9, 11, 3), seed=batch)], kind="accumulating",
                                                executor=executor)
        executor = run.executor
        assert run.got[0].shape == (batch, 7)
    assert [k.attrs["template"] for k in kernels_of(run.fused)] == ["conv2d", "reduce"]


@pytest.mark.parametrize("op, axes, keepdims", [("mean", None, False), ("sum", (1,), True), ("max", (2,), False), ("sum", (0, 1), False)])
def test_reduction_computes_its_input_from_the_elementwise_ops_before_it(op, axes, keepdims):
    """A weighted loss before its mean, a square before a sum: the elementwise ops that made a
    reduction's input run as the reduce kernel loads it (one kernel; operands full, last-axis, scalar)."""
    b = GraphBuilder("weighted")
    x = b.input((None, 9, 5), "float32", "x")
    w = b.input((None, 9, 5), "float32", "w")
    bias = b.input((5,), "float32", "bias")
    v = b.emit1("mul", [b.emit1("add", [b.emit1("square", [x]), bias]), w])
    v = b.emit1("mul", [v, b.emit1("constant", [], value=0.5, dtype="float32")])
    graph = b.finish([b.emit1(op, [v], axes=axes, keepdims=keepdims)])
    inputs = [image(3, (9, 5)) - 0.5, image(3, (9, 5)) - 0.2, torch.linspace(-1, 1, 5)]
    fused = assert_compiled_matches_reference(graph, inputs, kind="long").fused
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "reduce" and body_ops(kernel) == ["square", "add", "mul", "mul", op]


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduction_transforms_its_results_with_the_elementwise_ops_after_it(op):
    """A loss's mean times the batch size added into a running sum: the ops after a reduction are
    its epilogue (operands of the output's shape, along its last axis, or scalars), one kernel."""
    b = GraphBuilder("running")
    x = b.input((None, 9, 5), "float32", "x")
    scale = b.input((), "float32", "scale")
    running = b.input((None, 5), "float32", "running")
    bias = b.input((5,), "float32", "bias")
    v = b.emit1(op, [b.emit1("square", [x])], axes=(1,), keepdims=False)
    v = b.emit1("add", [b.emit1("add", [b.emit1("mul", [v, scale]), running]), bias])
    graph = b.finish([b.emit1("relu", [v])])
    inputs = [image(3, (9, 5)) - 0.5, torch.tensor(-0.7), image(3, (5,)) - 0.3, torch.linspace(-1, 1, 5)]
    fused = assert_compiled_matches_reference(graph, inputs, kind="long").fused
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "reduce" and body_ops(kernel) == ["square", op, "mul", "add", "add", "relu"]


# -- NaN and inf: passed on as the reference does -------------------------------------
# Triton's maximum (and tl.max) drop a NaN; torch's max_pool2d and amax keep it.


@pytest.mark.parametrize("case", ["max3x3-stride2-same", "avg3x3-stride2-same", "max2x2-valid", "avg3x3-stride2-valid"])
def test_pool_kernel_passes_nan_and_inf_on(case):
    """A window holding a NaN pools to NaN, one holding +inf to +inf (max) or inf (avg); a NaN
    after a +inf in the same window, and a +inf after a NaN, still give NaN."""
    layer, kwargs = POOLS[case]
    model = single_layer(layer(**kwargs), (9, 11, 5))
    x = with_nonfinite(image(2, (9, 11, 5)) - 0.5)
    x[1, 0, 0, 0], x[1, 0, 1, 0] = INF, NAN  # NaN after inf in one window
    x[1, 4, 4, 3], x[1, 4, 5, 3] = NAN, INF  # and inf after NaN
    fused = assert_compiled_matches_reference(model, [x], kind="elementwise").fused
    assert [k.attrs["template"] for k in kernels_of(fused)] == ["pool2d"]


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@pytest.mark.parametrize("axes", [(1, 2), (3,), (0,), None])
def test_reduce_kernel_passes_nan_and_inf_on(op, axes):
    shape = (9, 11, 5)
    x = with_nonfinite(image(3, shape) - 0.5)
    x[2, 3, 4, :2] = torch.tensor([INF, NAN])  # a NaN after an inf in one reduction
    x[2, 5, 4, 3:] = torch.tensor([NAN, INF])
    x[1, :, :, 4] = -INF  # one channel all -inf: max -inf, sum -inf
    assert_compiled_matches_reference(reduction_graph(op, axes, False, shape), [x], kind="long")


def test_reduce_max_keeps_a_nan_in_a_long_row():
    """R = 70 * 45: the NaN is in one BLOCK_R chunk and larger values in others."""
    x = image(2, (70, 45))
    x[0, 33, 20] = NAN
    x[1, 69, 44] = NAN  # the last, ragged chunk
    x[1, 0, 0] = INF
    assert_compiled_matches_reference(reduction_graph("max", (1, 2), False, (70, 45)), [x], kind="long")


@pytest.mark.parametrize("layer", [GlobalAveragePooling2D, GlobalMaxPooling2D])
def test_global_pooling_passes_nan_and_inf_on(layer):
    model = single_layer(layer(), (9, 11, 5))
    assert_compiled_matches_reference(model, [with_nonfinite(image(3, (9, 11, 5)))], kind="accumulating")
