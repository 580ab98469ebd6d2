"""The conv2d backward templates (conv2d_grad_filter, conv2d_grad_input) under Triton's interpreter.

Each case builds a graph of the backward op alone (the filter gradient with or
without its bias-gradient sum), runs the pass pipeline (it becomes one
kernel), launches the generated kernel into NaN-poisoned buffers and compares
with the op's torch reference on fresh random inputs. Sizes are ragged (7x9
images, 3 channels in, 5 filters, batch 2); kernels 3x3, 1x3 and 2x2; strides
1, 2 and (2, 1); 'valid' and 'same' padding; dilation 2. Then the kernels in a
CNN's training step, against the reference step, and `kcomp build --train`; and
every GPU block-size config compiled for sm_90 in a child process (this file run
as a script, without TRITON_INTERPRET): tensor cores, no spills.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.conv import output_size
from kcomp.ir.types import is_static
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE
from kcomp.runtime.kernel_cache import load_kernel

from kernel_helpers import (
    INF, NAN, assert_compiled_matches_reference, assert_compiled_steps_match_the_reference,
    assert_launch_matches_reference, assert_matches_reference, explain_training_build, launch_kernel, with_nonfinite,
)

ROOT = Path(__file__).resolve().parent.parent

# (kernel (kh, kw), strides, padding, dilation)
GEOMETRIES = {
    "3x3-s1-valid": ((3, 3), (1, 1), "valid", (1, 1)),
    "3x3-s1-same": ((3, 3), (1, 1), "same", (1, 1)),
    "3x3-s2-valid": ((3, 3), (2, 2), "valid", (1, 1)),  # of 7x9: the last row and column get no gradient
    "3x3-s2-same": ((3, 3), (2, 2), "same", (1, 1)),
    "1x3-s1-same": ((1, 3), (1, 1), "same", (1, 1)),
    "1x3-s(2,1)-valid": ((1, 3), (2, 1), "valid", (1, 1)),
    "2x2-s2-same": ((2, 2), (2, 2), "same", (1, 1)),  # even window: 'same' pads after, not before
    "3x3-s1-same-dil2": ((3, 3), (1, 1), "same", (2, 2)),
    "3x3-s2-valid-dil2": ((3, 3), (2, 2), "valid", (2, 2)),
}
TEMPLATES = {"conv2d_backprop_filter": "conv2d_grad_filter", "conv2d_backprop_input": "conv2d_grad_input"}


# -- helpers ------------------------------------------------------------------------


def conv_grad_graph(op, geometry, image=(7, 9, 3), filters=5, dtype="float32", bias_sum=False, groups=1):
    """conv2d_backprop_filter(x, dy) (and, with bias_sum, sum(dy) over N, OH, OW), or
    conv2d_backprop_input(dy, kernel), for an (H, W, C) image and `filters` filters."""
    (kh, kw), strides, padding, dilation = geometry
    h, w, c = image
    oh, ow = (output_size(n, k, s, d, padding) for n, k, s, d in zip((h, w), (kh, kw), strides, dilation))
    b = GraphBuilder(op)
    attrs = dict(strides=strides, padding=padding, dilation=dilation, groups=groups)
    if op == "conv2d_backprop_filter":
        x = b.input((None, h, w, c), dtype, "x")
        dy = b.input((None, oh, ow, filters), dtype, "dy")
        outs = [b.emit1(op, [x, dy], kernel_size=(kh, kw), **attrs)]
        if bias_sum:
            outs.append(b.emit1("sum", [dy], axes=(0, 1, 2), keepdims=False))
    else:
        dy = b.input((None, oh, ow, filters), dtype, "dy")
        kernel = b.input((kh, kw, c // groups, filters), dtype, "kernel")
        outs = [b.emit1(op, [dy, kernel], input_size=(h, w), **attrs)]
    return b.finish(outs)


def the_kernel(graph):
    """The one kernel the pipeline makes of the graph; it absorbed every node."""
    fused, _ = run_pipeline(graph)
    (kernel,) = [n for n in fused.nodes if n.op == "kernel"]
    assert kernel.attrs["template"] == TEMPLATES[graph.nodes[0].op]
    assert [n.op for n in kernel.attrs["body"].nodes] == [n.op for n in graph.nodes]
    return kernel


def random_inputs(graph, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [v.shape if is_static(v.shape[0]) else (batch, *v.shape[1:]) for v in graph.inputs]  # kernel / NHWC
    return [torch.randn(s, generator=g).to(getattr(torch, v.dtype)) for s, v in zip(shapes, graph.inputs)]


def check_kernel(graph, inputs):
    """The generated kernel launched into NaN-poisoned buffers, as the reference: a gradient sums
    over the batch and the image (the filter's) or over every tap and filter (the input's)."""
    assert_launch_matches_reference(graph, the_kernel(graph), inputs, kind="long", precision="ieee")


def geometry_fits(name, image=(7, 9)):
    (kh, kw), strides, padding, dilation = GEOMETRIES[name]
    return all(output_size(n, k, s, d, padding) > 0 for n, k, s, d in zip(image, (kh, kw), strides, dilation))


# -- the kernels against the references -----------------------------------------------


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("op", list(TEMPLATES))
def test_conv_grad_kernel(op, geometry):
    assert geometry_fits(geometry)
    graph = conv_grad_graph(op, GEOMETRIES[geometry])
    check_kernel(graph, random_inputs(graph, 2, seed=list(GEOMETRIES).index(geometry)))


@pytest.mark.parametrize("geometry", ["3x3-s1-same", "3x3-s2-valid", "1x3-s(2,1)-valid"])
def test_filter_gradient_with_its_bias_gradient_in_one_kernel(geometry):
    graph = conv_grad_graph("conv2d_backprop_filter", GEOMETRIES[geometry], bias_sum=True)
    check_kernel(graph, random_inputs(graph, 2, seed=11))


def transpose_graph(geometry, image=(7, 9, 3), filters=5, dtype="float32"):
    """A Conv2DTranspose's forward: conv2d_backprop_input of x (the conv's output size) with a
    (kh, kw, C, filters) kernel back to an (H, W, C) image, then bias_add and relu."""
    (kh, kw), strides, padding, dilation = geometry
    h, w, c = image
    oh, ow = (output_size(n, k, s, d, padding) for n, k, s, d in zip((h, w), (kh, kw), strides, dilation))
    b = GraphBuilder("conv_transpose")
    x = b.input((None, oh, ow, filters), dtype, "x")
    kernel = b.input((kh, kw, c, filters), dtype, "kernel")
    y = b.emit1("conv2d_backprop_input", [x, kernel], input_size=(h, w), strides=strides, padding=padding,
                dilation=dilation)
    return b.finish([b.emit1("relu", [b.emit1("bias_add", [y, b.input((c,), dtype, "bias")])])])


def transpose_kernel(graph):
    fused, _ = run_pipeline(graph)
    (kernel,) = fused.nodes
    assert kernel.attrs["template"] == "conv2d_grad_input"
    assert [n.op for n in kernel.attrs["body"].nodes] == ["conv2d_backprop_input", "bias_add", "relu"]
    return kernel


@pytest.mark.parametrize("geometry", ["3x3-s2-same", "2x2-s2-same", "3x3-s1-valid"])
def test_input_gradient_takes_a_transposed_convs_bias_and_activation(geometry):
    """Conv2DTranspose's forward is conv2d_backprop_input: its bias_add and relu are the kernel's
    epilogue, NaN and inf in x passing through them as in the reference."""
    graph = transpose_graph(GEOMETRIES[geometry])
    kernel = transpose_kernel(graph)
    inputs = random_inputs(graph, 2, seed=7)
    assert_launch_matches_reference(graph, kernel, inputs, kind="long", precision="ieee")
    inputs[0] = with_nonfinite(inputs[0])
    assert_launch_matches_reference(graph, kernel, inputs, kind="long", poison=False, precision="ieee")


@pytest.mark.parametrize("op", list(TEMPLATES))
def test_several_tiles_of_rows_columns_and_reduction(op):
    # wgrad: 3*3*21 = 189 rows (> BM), 37 filters (> BN), 3*11*13 output pixels (> BK, ragged).
    # dgrad: 3*11*13 = 429 pixels (> BM * GROUP_M), 21 channels (> BN), 3*3*37 taps (> BK).
    graph = conv_grad_graph(op, GEOMETRIES["3x3-s1-same"], image=(11, 13, 21), filters=37, bias_sum=op.endswith("filter"))
    check_kernel(graph, random_inputs(graph, 3, seed=5))


def nonfinite_inputs(graph, images_only=True):
    """Random inputs with NaN, +inf and -inf placed in each image (x, dy), and in the kernel unless images_only."""
    inputs = random_inputs(graph, 2, seed=4)
    return [with_nonfinite(t, places=places) if not (images_only and is_static(v.shape[0])) else t
            for t, v, places in zip(inputs, graph.inputs, [(NAN, INF), (-INF, NAN)])]


@pytest.mark.parametrize("geometry", ["3x3-s2-same", "3x3-s1-valid"])
@pytest.mark.parametrize("op", list(TEMPLATES))
def test_nan_and_inf_pass_on_as_in_the_reference(op, geometry):
    """NaN, +inf and -inf in x and dy: the gradients are NaN and inf where the reference's are,
    the filter gradient's bias sum too."""
    graph = conv_grad_graph(op, GEOMETRIES[geometry], bias_sum=op == "conv2d_backprop_filter")
    inputs = nonfinite_inputs(graph)
    assert [not t.isfinite().all() for t in inputs] == [True, op == "conv2d_backprop_filter"]  # dy; x; not the kernel
    assert_launch_matches_reference(graph, the_kernel(graph), inputs, kind="long", poison=False, precision="ieee")


@pytest.mark.parametrize("geometry", ["3x3-s2-same", "3x3-s1-valid"])
def test_input_gradient_of_nan_weights_is_nan_wherever_the_reference_is(geometry):
    """A NaN or inf weight: the reference's dx is NaN or inf at the pixels its tap reaches (torch
    adds only the products that land); the implicit GEMM also multiplies the masked zeros of dY by
    that weight (0 * inf = NaN), so the kernel's dx is NaN in that channel at every pixel. More
    NaN than the reference, never fewer: a failure is never hidden."""
    graph = conv_grad_graph("conv2d_backprop_input", GEOMETRIES[geometry])
    inputs = nonfinite_inputs(graph, images_only=False)
    (got,), (want,) = launch_kernel(graph, the_kernel(graph), inputs, poison=False, precision="ieee")
    assert not (got.isfinite() & ~want.isfinite()).any()
    both = got.isfinite() & want.isfinite()
    assert_matches_reference([got[both]], [want[both]], kind="long")


@pytest.mark.parametrize("op", list(TEMPLATES))
def test_conv_grad_float16(op):
    graph = conv_grad_graph(op, GEOMETRIES["3x3-s2-same"], dtype="float16")
    check_kernel(graph, random_inputs(graph, 2, seed=4))


# A small tile and BK so that the test sizes' reductions split in several parts, the last one short.
SPLIT_CONFIG = dict(BM=32, BN=16, BK=16, GROUP_M=4, num_warps=4, num_stages=1, SPLIT=5)


@pytest.mark.parametrize("bias_sum", [False, True])
@pytest.mark.parametrize("geometry", ["3x3-s1-same", "3x3-s2-valid"])
def test_filter_gradient_summed_in_parts(geometry, bias_sum):
    """A config with SPLIT: each part of the pixels (429 in 5 parts, 90 in 3) summed by its own
    programs into float32 partial sums that split_sum_kernel adds: the reference's dW and bias
    gradient, bit for bit the same at a second run (no atomics)."""
    graph = conv_grad_graph("conv2d_backprop_filter", GEOMETRIES[geometry], image=(11, 13, 21), filters=37, bias_sum=bias_sum)
    kernel, inputs = the_kernel(graph), random_inputs(graph, 3, seed=9)
    first = assert_launch_matches_reference(graph, kernel, inputs, kind="long", precision="ieee", config=SPLIT_CONFIG)
    again, _ = launch_kernel(graph, kernel, inputs, precision="ieee", config=SPLIT_CONFIG)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_filter_gradient_in_parts_passes_nan_and_inf_on_and_casts_at_the_end():
    graph = conv_grad_graph("conv2d_backprop_filter", GEOMETRIES["3x3-s2-same"], bias_sum=True)
    assert_launch_matches_reference(graph, the_kernel(graph), nonfinite_inputs(graph), kind="long", poison=False,
                                    precision="ieee", config=SPLIT_CONFIG)
    graph = conv_grad_graph("conv2d_backprop_filter", GEOMETRIES["3x3-s1-same"], dtype="float16", bias_sum=True)
    assert_launch_matches_reference(graph, the_kernel(graph), random_inputs(graph, 2, seed=3), kind="long",
                                    precision="ieee", config=SPLIT_CONFIG)


def test_a_gpu_splits_a_long_reduction_over_few_tiles():
    """The CNN's first filter gradient (3x3, 1 channel to 32 filters, batch 128 of 26x26 outputs) is
    one tile: the GPU candidates also sum it in parts, for about SPLIT_PROGRAMS programs; the first
    candidate, the one an AOT build compiles, is whole. A gradient of many tiles is not split."""
    from kcomp.kernels.conv2d_grad import SPLIT_PROGRAMS, filter_configs

    configs = filter_configs(9, 32, 128 * 26 * 26, interpret=False)
    assert "SPLIT" not in configs[0]
    assert [c.get("SPLIT", 1) for c in configs] == [1, SPLIT_PROGRAMS, 1, SPLIT_PROGRAMS // 2]
    assert all("SPLIT" not in c for c in filter_configs(9, 32, 300, interpret=False))  # too few pixels to share
    assert all("SPLIT" not in c for c in filter_configs(3 * 3 * 512, 512, 4096, interpret=False))  # 72 x 8 tiles


def assert_one_plan_serves_every_batch_size(graph, batches=(1, 3)):
    """One fused plan (one executor) run at each batch size, each against the reference."""
    executor = None
    for batch in batches:
        executor = assert_compiled_matches_reference(graph, random_inputs(graph, batch, seed=batch), kind="long",
                                                     executor=executor).executor


@pytest.mark.parametrize("op", list(TEMPLATES))
def test_one_plan_serves_every_batch_size(op):
    assert_one_plan_serves_every_batch_size(conv_grad_graph(op, GEOMETRIES["3x3-s2-same"]))


@pytest.mark.parametrize("op", list(TEMPLATES))
def test_a_gradient_of_the_wrong_size_is_refused(op):
    graph = conv_grad_graph(op, GEOMETRIES["3x3-s1-valid"])
    launch = load_kernel(kernel_source(the_kernel(graph), 0)).launch
    inputs = random_inputs(graph, 2)
    at = 1 if op == "conv2d_backprop_filter" else 0  # dy
    inputs[at] = inputs[at][:, :-1]  # one output row short
    with pytest.raises(ValueError, match="does not fit a 7x9 input and a 3x3 window"):
        launch(*inputs)


@pytest.mark.parametrize("op", list(TEMPLATES))
def test_grouped_conv_gradients_stay_unfused(op):
    graph = conv_grad_graph(op, GEOMETRIES["3x3-s1-same"], image=(7, 9, 4), filters=6, groups=2)
    fused, _ = run_pipeline(graph)
    assert [n.op for n in fused.nodes] == [op]


# -- in a training step -------------------------------------------------------------


def two_conv_cnn():
    import kcomp
    from kcomp.layers import Conv2D, Dense, Flatten, Input
    from kcomp.models import Sequential

    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(31)
    return Sequential([
        Input(shape=(9, 11, 3)),
        Conv2D(4, 3, strides=2, padding="same", activation="relu"),  # a strided input gradient
        Conv2D(6, (1, 3), padding="valid", activation="relu"),
        Flatten(),
        Dense(5, activation="softmax"),
    ])


def test_training_step_runs_conv_grads_on_the_templates():
    from kcomp.compiler import train_step_graph

    model = two_conv_cnn()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    absorbed = [
        (k.attrs["template"], tuple(n.op for n in k.attrs["body"].nodes if n.op != "constant"))
        for k in fused.nodes if k.op == "kernel"
    ]
    assert absorbed.count(("conv2d_grad_filter", ("conv2d_backprop_filter", "sum"))) == 2  # dW and the bias gradient
    # The first conv's input needs none; the second's computes the first's relu gradient in its epilogue.
    assert absorbed.count(("conv2d_grad_input", ("conv2d_backprop_input", "threshold_grad"))) == 1
    assert not [n.op for n in fused.nodes if n.op.startswith("conv2d_backprop")]


def test_compiled_training_step_equals_the_reference_step():
    import kcomp

    rng = np.random.default_rng(32)
    x = rng.normal(size=(6, 9, 11, 3)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 5, 6), 5)
    assert_compiled_steps_match_the_reference(two_conv_cnn, x, y)


def test_build_train_explains_conv_grads_as_kernels(tmp_path):
    lines = explain_training_build(tmp_path)
    stdout = "\n".join(lines)
    filters = [line for line in lines if "(conv2d_backprop_filter + sum) -> kernel" in line]
    inputs = [line for line in lines if "(conv2d_backprop_input) -> kernel" in line]
    assert len(filters) == 2 and all(line.endswith("[conv2d_grad_filter]") for line in filters), stdout
    assert len(inputs) == 1 and inputs[0].endswith("[conv2d_grad_input]"), stdout
    assert not [line for line in lines if "conv2d_backprop" in line and "unfused" in line], stdout


# -- AOT for sm_90, in a child process ------------------------------------------------

AOT_CASES = [  # (op, geometry, image, filters, bias_sum) at batch 128
    ("conv2d_backprop_filter", "3x3-s1-same", (28, 28, 64), 64, True),
    ("conv2d_backprop_input", "3x3-s2-same", (28, 28, 128), 64, False),  # the divisibility masks
]


def compile_cases(cases) -> list[dict]:
    """The child's job: each case's kernel compiled for sm_90 with every GPU config (float32),
    and with the first one in bfloat16; the resources of each."""
    from kcomp.kernels.conv2d_grad import FILTER_GPU_CONFIGS, INPUT_GPU_CONFIGS

    records = []
    for op, geometry, image, filters, bias_sum in cases:
        kernel = the_kernel(conv_grad_graph(op, GEOMETRIES[geometry], tuple(image), filters, bias_sum=bias_sum))
        configs = FILTER_GPU_CONFIGS if op == "conv2d_backprop_filter" else INPUT_GPU_CONFIGS
        records += compile_for_sm_90(kernel, configs, f"{op} {geometry}")
        if op == "conv2d_backprop_filter" and bias_sum:
            records += compile_split_for_sm_90(kernel, dict(FILTER_GPU_CONFIGS[1], SPLIT=8), f"{op} {geometry} in parts")
    return records


def compile_split_for_sm_90(kernel, config, label) -> list[dict]:
    """The two launches of a filter gradient summed in parts (the GEMM, then split_sum_kernel), each
    compiled for sm_90 at batch 128: one record each (the sum has no tensor cores to use)."""
    from kcomp.runtime.aot import example_inputs
    from kcomp.runtime.aot.compile import compile_launches

    results = compile_launches(kernel_source(kernel, 0), example_inputs(kernel, 128), target="sm_90", config=config)
    return [{"case": f"{label}: {r.function}", "function": r.function, "spill_bytes": r.spill_bytes,
             "local_stores": r.local_stores(), "registers": r.registers, "hgmma": r.tensor_core_counts().get("HGMMA", 0)}
            for r in results]


def compile_for_sm_90(kernel, configs, label) -> list[dict]:
    """The kernel node compiled for sm_90 at batch 128 with every config in float32, and with the
    first in bfloat16: one record of resources each (tests/test_kernels_conv_depthwise.py too)."""
    from kcomp.runtime.aot import compile_kernel, example_inputs

    records = []
    for dtype, config in [("float32", c) for c in configs] + [("bfloat16", configs[0])]:
        inputs = example_inputs(kernel, 128, float_dtype=None if dtype == "float32" else dtype)
        result = compile_kernel(kernel_source(kernel, 0), inputs, target="sm_90", config=config)
        records.append({"case": f"{label} {dtype} {config}", "spill_bytes": result.spill_bytes,
                        "local_stores": result.local_stores(), "registers": result.registers,
                        "hgmma": result.tensor_core_counts().get("HGMMA", 0)})
    return records


@pytest.mark.slow
def test_conv_grad_kernels_compile_for_sm_90_on_tensor_cores_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    from kcomp.kernels.conv2d_grad import FILTER_GPU_CONFIGS, INPUT_GPU_CONFIGS

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=600)
    split = [r for r in records if "in parts" in r["case"]]
    assert [r["function"] for r in split] == ["conv2d_grad_filter_kernel", "split_sum_kernel"]
    assert len(records) == len(FILTER_GPU_CONFIGS) + len(INPUT_GPU_CONFIGS) + 2 + len(split)
    for rec in records:
        assert rec["hgmma"] > 0 or rec.get("function") == "split_sum_kernel", rec
        assert rec["spill_bytes"] == 0 and rec["local_stores"] == 0, rec


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
