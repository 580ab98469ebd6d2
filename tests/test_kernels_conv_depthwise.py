"""The depthwise conv templates (conv2d_depthwise and its two gradients) under Triton's interpreter.

Each case builds a graph of one op (the forward with a bias and an activation after it, the
filter gradient with or without its bias-gradient sum, the input gradient), runs the pass
pipeline (it becomes one kernel of the depthwise template), launches the generated kernel into
NaN-poisoned buffers and compares with the op's torch reference (F.conv2d / conv_transpose2d /
conv2d_weight with groups) on fresh random inputs. Ragged sizes: 7x9 images, 3 channels, depth
multipliers 1 and 2, batch 2; the geometries of tests/test_kernels_conv_grad.py (strides 1, 2,
(2, 1); 'valid' and 'same'; dilation 2); a case wide enough for several tiles of every axis.
"""

import pytest

from kcomp.ir.builder import GraphBuilder
from kcomp.passes import run_pipeline

from kernel_helpers import INF, NAN, assert_launch_matches_reference, with_nonfinite
from test_kernels_conv_grad import (
    GEOMETRIES, assert_one_plan_serves_every_batch_size, conv_grad_graph, geometry_fits, random_inputs,
)

OPS = {"conv2d": "conv2d_depthwise", "conv2d_backprop_input": "conv2d_depthwise_grad_input",
       "conv2d_backprop_filter": "conv2d_depthwise_grad_filter"}
CHANNELS = 3


def forward_graph(geometry, image=(7, 9, CHANNELS), multiplier=2, dtype="float32", after=("bias_add", "relu")):
    """conv2d(x, kernel (kh, kw, 1, C * multiplier), groups=C), then the ops in `after`."""
    (kh, kw), strides, padding, dilation = geometry
    h, w, c = image
    b = GraphBuilder("depthwise")
    x = b.input((None, h, w, c), dtype, "x")
    kernel = b.input((kh, kw, 1, c * multiplier), dtype, "kernel")
    y = b.emit1("conv2d", [x, kernel], strides=strides, padding=padding, dilation=dilation, groups=c)
    if "bias_add" in after:
        y = b.emit1("bias_add", [y, b.input((c * multiplier,), dtype, "bias")])
    if "relu" in after:
        y = b.emit1("relu", [y])
    return b.finish([y])


def depthwise_graph(op, geometry, image=(7, 9, CHANNELS), multiplier=2, dtype="float32", bias_sum=False):
    if op == "conv2d":
        return forward_graph(geometry, image, multiplier, dtype)
    return conv_grad_graph(op, geometry, image, image[2] * multiplier, dtype, bias_sum=bias_sum, groups=image[2])


def the_kernel(graph):
    """The one kernel the pipeline makes of the graph, of the depthwise template for its op."""
    fused, _ = run_pipeline(graph)
    (kernel,) = [n for n in fused.nodes if n.op == "kernel"]
    assert [n.op for n in fused.nodes] == ["kernel"]
    assert kernel.attrs["template"] == OPS[graph.nodes[0].op]
    return kernel


def check(graph, inputs, poison=True):
    assert_launch_matches_reference(graph, the_kernel(graph), inputs, kind="long", poison=poison)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("op", list(OPS))
def test_depthwise_kernel(op, geometry, multiplier):
    assert geometry_fits(geometry)
    graph = depthwise_graph(op, GEOMETRIES[geometry], multiplier=multiplier)
    check(graph, random_inputs(graph, 2, seed=list(GEOMETRIES).index(geometry)))


@pytest.mark.parametrize("geometry", ["3x3-s1-same", "3x3-s2-valid", "2x2-s2-same"])
def test_filter_gradient_with_its_bias_gradient_in_one_kernel(geometry):
    graph = depthwise_graph("conv2d_backprop_filter", GEOMETRIES[geometry], bias_sum=True)
    assert [n.op for n in the_kernel(graph).attrs["body"].nodes] == ["conv2d_backprop_filter", "sum"]
    check(graph, random_inputs(graph, 2, seed=11))


@pytest.mark.parametrize("op", list(OPS))
def test_several_tiles_of_pixels_channels_and_reduction(op):
    # 21 channels x 2 = 42 filters (> BN = 16); 3 * 11 * 13 = 429 pixels (> BM = 64, > BL = 128).
    graph = depthwise_graph(op, GEOMETRIES["3x3-s1-same"], image=(11, 13, 21), bias_sum=op.endswith("filter"))
    check(graph, random_inputs(graph, 3, seed=5))


@pytest.mark.parametrize("batch, splits", [(2, 2), (5, 3)])
def test_filter_gradient_split_over_the_pixels_adds_the_chunks(batch, splits):
    """L = batch * 23 * 25 output pixels in chunks of whole BL steps (the last one ragged): each
    chunk's partial sums, of dW and of the bias gradient, added by the launch."""
    from kcomp.kernels.conv2d_depthwise import FILTER_INTERPRETER_CONFIG, filter_splits

    assert filter_splits(batch * 23 * 25, FILTER_INTERPRETER_CONFIG["BL"]) == splits
    graph = depthwise_graph("conv2d_backprop_filter", GEOMETRIES["3x3-s1-same"], image=(23, 25, 5), bias_sum=True)
    check(graph, random_inputs(graph, batch, seed=batch))


@pytest.mark.parametrize("geometry", ["3x3-s2-same", "3x3-s1-valid"])
@pytest.mark.parametrize("op", list(OPS))
def test_nan_and_inf_pass_on_as_in_the_reference(op, geometry):
    """NaN, +inf and -inf in every input (images, gradients, kernels, bias): non-finite exactly
    where the reference is (a tap that misses adds nothing, so a NaN weight reaches only the
    pixels its tap reaches), equal elsewhere."""
    graph = depthwise_graph(op, GEOMETRIES[geometry], bias_sum=op.endswith("filter"))
    inputs = [with_nonfinite(t, places=p) for t, p in zip(random_inputs(graph, 2, seed=4), [(NAN, INF), (-INF, NAN), (INF,)])]
    check(graph, inputs, poison=False)


@pytest.mark.parametrize("op", list(OPS))
def test_depthwise_float16(op):
    graph = depthwise_graph(op, GEOMETRIES["3x3-s2-same"], dtype="float16")
    check(graph, random_inputs(graph, 2, seed=4))


@pytest.mark.parametrize("op", list(OPS))
def test_one_plan_serves_every_batch_size(op):
    assert_one_plan_serves_every_batch_size(depthwise_graph(op, GEOMETRIES["3x3-s2-same"]))


def test_grouped_conv_that_is_not_depthwise_stays_unfused():
    """groups=2 over 4 channels (2 per group): neither the GEMM template nor the depthwise one."""
    graph = conv_grad_graph("conv2d_backprop_input", GEOMETRIES["3x3-s1-same"], image=(7, 9, 4), filters=6, groups=2)
    fused, _ = run_pipeline(graph)
    assert [n.op for n in fused.nodes] == ["conv2d_backprop_input"]




# -- AOT for sm_90, in a child process ------------------------------------------------

AOT_CASES = [  # (op, geometry, image, depth multiplier) at batch 128; "transpose": Conv2DTranspose + bias + relu
    ("conv2d", "3x3-s1-same", (28, 28, 64), 1),
    ("conv2d_backprop_input", "3x3-s2-same", (28, 28, 64), 2),
    ("conv2d_backprop_filter", "3x3-s1-same", (28, 28, 64), 1),
    ("transpose", "3x3-s2-same", (28, 28, 64), 64),  # the conv2d_grad_input template with its epilogue
]


def compile_cases(cases) -> list[dict]:
    """The child's job: each case's kernel compiled for sm_90 with every GPU config (float32), and
    with the first one in bfloat16; the resources of each."""
    from kcomp.kernels import conv2d_depthwise as dw
    from kcomp.kernels.conv2d_grad import INPUT_GPU_CONFIGS
    from test_kernels_conv_grad import compile_for_sm_90, transpose_graph, transpose_kernel

    records = []
    for op, geometry, image, multiplier in cases:
        if op == "transpose":
            kernel, configs = transpose_kernel(transpose_graph(GEOMETRIES[geometry], tuple(image), multiplier)), INPUT_GPU_CONFIGS
        else:
            graph = depthwise_graph(op, GEOMETRIES[geometry], tuple(image), multiplier, bias_sum=op.endswith("filter"))
            kernel = the_kernel(graph)
            configs = dw.FILTER_GPU_CONFIGS if op == "conv2d_backprop_filter" else dw.GPU_CONFIGS
        records += compile_for_sm_90(kernel, configs, f"{op} {geometry}")
    return records


@pytest.mark.slow
def test_depthwise_and_transposed_kernels_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    from kcomp.kernels import conv2d_depthwise as dw
    from kcomp.kernels.conv2d_grad import INPUT_GPU_CONFIGS

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=900)
    assert len(records) == 2 * len(dw.GPU_CONFIGS) + len(dw.FILTER_GPU_CONFIGS) + len(INPUT_GPU_CONFIGS) + 4
    for rec in records:
        assert rec["spill_bytes"] == 0 and rec["local_stores"] == 0, rec
        assert (rec["hgmma"] > 0) == rec["case"].startswith("transpose"), rec  # tl.dot only in the GEMM template


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
