"""The pool2d_grad template (max_pool2d_grad, avg_pool2d_grad) under Triton's interpreter.

Each case builds a one-op graph, runs the pass pipeline (the op becomes one
pool2d_grad kernel), launches the generated kernel into a NaN-poisoned buffer
and compares it with the op's torch reference on fresh random inputs. Sizes are
ragged (7x9 images, 5 or 37 channels); windows overlap (3x3 stride 2, 3x3
stride 1) or leave pixels uncovered ('valid' 2x2 stride 2 of 7x9); max is
checked on inputs full of ties, where only the reference's rule (the first
maximum in row-major order) matches. The same kernel with relu's gradient
mask (threshold_grad(dx, h): dx where h > 0) as its epilogue, as a training step fuses it. Then:
the kernels in a CNN's training step, `kcomp build --train`, and an AOT
compile for sm_90 in a child process (this file run as a script, without
TRITON_INTERPRET).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.conv import output_size
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE

from kernel_helpers import (
    INF, NAN, assert_compiled_matches_reference, assert_compiled_steps_match_the_reference,
    assert_launch_matches_reference, explain_training_build, with_nonfinite,
)

ROOT = Path(__file__).resolve().parent.parent

# (pool_size, strides, padding)
GEOMETRIES = {
    "2x2-stride2-valid": ((2, 2), (2, 2), "valid"),  # of 7x9: no window reaches the last row and column
    "3x3-stride2-valid": ((3, 3), (2, 2), "valid"),  # overlapping windows
    "3x3-stride1-same": ((3, 3), (1, 1), "same"),  # up to 9 windows cover a pixel
    "3x3-stride2-same": ((3, 3), (2, 2), "same"),
    "2x3-stride(1,2)-valid": ((2, 3), (1, 2), "valid"),
    "2x3-stride(1,2)-same": ((2, 3), (1, 2), "same"),
}
OPS = ("max_pool2d_grad", "avg_pool2d_grad")


# -- helpers ------------------------------------------------------------------------


def pool_grad_graph(op, geometry, image=(7, 9, 5), dtype="float32"):
    """One max_pool2d_grad (inputs x, dy) or avg_pool2d_grad (input dy) over an (H, W, C) image."""
    pool, strides, padding = geometry
    h, w, c = image
    oh, ow = (output_size(size, k, s, 1, padding) for size, k, s in zip((h, w), pool, strides))
    b = GraphBuilder(op)
    attrs = dict(pool_size=pool, strides=strides, padding=padding)
    if op == "max_pool2d_grad":
        x = b.input((None, h, w, c), dtype, "x")
        dy = b.input((None, oh, ow, c), dtype, "dy")
        out = b.emit1(op, [x, dy], **attrs)
    else:
        dy = b.input((None, oh, ow, c), dtype, "dy")
        out = b.emit1(op, [dy], input_size=(h, w), **attrs)
    return b.finish([out])


def masked_pool_grad_graph(op, geometry, image=(7, 9, 5), dtype="float32"):
    """relu's gradient after a pool's, as in a training step: dz = threshold_grad(pool_grad(...), h),
    pool_grad's dx where h > 0, else 0.

    h is the relu output the pool read: max_pool2d_grad's x, and for the average an
    input of its own (the avg grad needs no x)."""
    pool, strides, padding = geometry
    h, w, c = image
    oh, ow = (output_size(size, k, s, 1, padding) for size, k, s in zip((h, w), pool, strides))
    b = GraphBuilder(f"masked_{op}")
    attrs = dict(pool_size=pool, strides=strides, padding=padding)
    relu_out = b.input((None, h, w, c), dtype, "x")
    dy = b.input((None, oh, ow, c), dtype, "dy")
    if op == "max_pool2d_grad":
        dx = b.emit1(op, [relu_out, dy], **attrs)
    else:
        dx = b.emit1(op, [dy], input_size=(h, w), **attrs)
    dz = b.emit1("threshold_grad", [dx, relu_out], threshold=0.0)
    return b.finish([dz])


def the_kernel(graph):
    """The graph's one kernel: the pipeline put every op of it into one pool2d_grad launch."""
    fused, _ = run_pipeline(graph)
    (kernel,) = [n for n in fused.nodes if n.op == "kernel"]
    assert kernel.attrs["template"] == "pool2d_grad"
    computed = [n.op for n in kernel.attrs["body"].nodes if n.op != "constant"]
    assert sorted(computed) == sorted(n.op for n in graph.nodes if n.op != "constant")
    return kernel


def random_inputs(graph, batch, x_kind="normal", seed=0):
    """dy ~ N(0, 1); x ~ N(0, 1), or small integers ("ties": most windows hold their maximum
    twice), or a relu's output ("relu": half zeros, so the gradient mask is half zeros)."""
    g = torch.Generator().manual_seed(seed)
    tensors = []
    for v in graph.inputs:
        shape = (batch, *v.shape[1:])
        if v.name == "x" and x_kind == "ties":
            t = torch.randint(-2, 2, shape, generator=g).float()
        elif v.name == "x" and x_kind == "relu":
            t = torch.randn(shape, generator=g).relu()
        else:
            t = torch.randn(shape, generator=g)
        tensors.append(t.to(getattr(torch, v.dtype)))
    return tensors


def check_kernel(graph, inputs):
    """The generated kernel launched into a NaN-poisoned buffer, as the reference (a pixel's
    gradient sums the few windows that cover it); returns its output."""
    (got,) = assert_launch_matches_reference(graph, the_kernel(graph), inputs, kind="elementwise")
    return got


# -- the kernel against the reference -----------------------------------------------


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("op", OPS)
def test_pool_grad_kernel(op, geometry):
    graph = pool_grad_graph(op, GEOMETRIES[geometry])
    check_kernel(graph, random_inputs(graph, 2, seed=list(GEOMETRIES).index(geometry)))


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_max_pool_grad_ties_go_to_the_first_maximum(geometry):
    graph = pool_grad_graph("max_pool2d_grad", GEOMETRIES[geometry])
    x, dy = random_inputs(graph, 2, x_kind="ties", seed=7)
    assert x.unique().numel() <= 4  # ties everywhere: a last-maximum or every-maximum rule would differ
    check_kernel(graph, [x, dy])


@pytest.mark.parametrize("op", OPS)
def test_several_pixel_and_channel_blocks(op):
    # 3 * 11 * 13 = 429 pixels and 37 channels: several blocks of each, ragged last ones.
    graph = pool_grad_graph(op, GEOMETRIES["3x3-stride2-same"], image=(11, 13, 37))
    check_kernel(graph, random_inputs(graph, 3, x_kind="ties", seed=3))


def test_max_pool_grad_padding_never_wins_over_negative_pixels():
    graph = pool_grad_graph("max_pool2d_grad", GEOMETRIES["3x3-stride2-same"])
    x, dy = random_inputs(graph, 2, seed=5)
    check_kernel(graph, [-10.0 - x.abs(), dy])  # a pad read as 0 would take the gradient


def test_max_pool_grad_nan_takes_the_gradient_as_in_torch():
    graph = pool_grad_graph("max_pool2d_grad", GEOMETRIES["3x3-stride1-same"])
    x, dy = random_inputs(graph, 2, seed=9)
    x[0, 2, 3, 1] = x[0, 2, 5, 1] = x[1, 6, 8, 4] = float("nan")
    check_kernel(graph, [x, dy])


@pytest.mark.parametrize("geometry", ["3x3-stride2-same", "2x2-stride2-valid"])
@pytest.mark.parametrize("op", OPS)
def test_nan_and_inf_pass_on_as_in_the_reference(op, geometry):
    """NaN, +inf and -inf in x (which window maximum takes the gradient: a NaN wins, the last
    NaN of a window as torch's max_pool2d keeps it) and in dy (it lands where the window's does)."""
    graph = pool_grad_graph(op, GEOMETRIES[geometry])
    inputs = random_inputs(graph, 2, seed=11)
    if op == "max_pool2d_grad":
        x = inputs[0] = with_nonfinite(inputs[0])
        x[1, 2, 2, 0], x[1, 2, 3, 0] = INF, NAN  # in one window: the NaN takes it
        x[1, 4, 4, 1], x[1, 4, 5, 1] = NAN, NAN  # two NaN: the last
        x[0, 0, 0, :] = -INF
    inputs[-1] = with_nonfinite(inputs[-1], places=(NAN, INF))
    assert_launch_matches_reference(graph, the_kernel(graph), inputs, kind="elementwise", poison=False)


@pytest.mark.parametrize("op", OPS)
def test_pool_grad_float16(op):
    graph = pool_grad_graph(op, GEOMETRIES["3x3-stride2-same"], image=(7, 9, 7), dtype="float16")
    check_kernel(graph, random_inputs(graph, 2, seed=4))


@pytest.mark.parametrize("op", OPS)
def test_one_plan_serves_every_batch_size(op):
    graph = pool_grad_graph(op, GEOMETRIES["3x3-stride1-same"])
    executor = None
    for batch in (1, 3):
        run = assert_compiled_matches_reference(graph, random_inputs(graph, batch, seed=batch), kind="elementwise",
                                                executor=executor)
        executor = run.executor
        assert run.got[0].shape == (batch, 7, 9, 5)


# -- with relu's gradient mask as the epilogue ----------------------------------------

MASKED_GEOMETRIES = ["2x2-stride2-valid", "3x3-stride2-valid", "3x3-stride1-same", "2x3-stride(1,2)-same"]


@pytest.mark.parametrize("geometry", MASKED_GEOMETRIES)
@pytest.mark.parametrize("op", OPS)
def test_pool_grad_kernel_applies_the_relu_mask(op, geometry):
    graph = masked_pool_grad_graph(op, GEOMETRIES[geometry])
    inputs = random_inputs(graph, 2, x_kind="relu", seed=11 + MASKED_GEOMETRIES.index(geometry))
    got = check_kernel(graph, inputs)
    assert (got == 0).any() and (got != 0).any()  # the mask zeroed some gradients, not all


@pytest.mark.parametrize("op", OPS)
def test_masked_pool_grad_over_several_pixel_and_channel_blocks(op):
    graph = masked_pool_grad_graph(op, GEOMETRIES["3x3-stride2-same"], image=(11, 13, 37))
    check_kernel(graph, random_inputs(graph, 3, x_kind="relu", seed=13))


def test_masked_pool_grad_float16():
    graph = masked_pool_grad_graph("max_pool2d_grad", GEOMETRIES["3x3-stride2-same"], image=(7, 9, 7), dtype="float16")
    check_kernel(graph, random_inputs(graph, 2, x_kind="relu", seed=14))


def test_masked_pool_grad_source_reads_the_mask_in_its_epilogue():
    source = kernel_source(the_kernel(masked_pool_grad_graph("max_pool2d_grad", GEOMETRIES["2x2-stride2-valid"])), 0).text
    assert "def epilogue(" in source and "<= 0.0, 0.0," in source and "epilogue=epilogue," in source


# -- in a training step -------------------------------------------------------------


def pooling_cnn():
    import kcomp
    from kcomp.layers import AveragePooling2D, Conv2D, Dense, Flatten, Input, MaxPooling2D
    from kcomp.models import Sequential

    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(21)
    return Sequential([
        Input(shape=(9, 11, 3)),
        Conv2D(4, 3, padding="same", activation="relu"),
        MaxPooling2D(3, 2, padding="same"),  # overlapping windows, padded
        Conv2D(6, 3, padding="same", activation="relu"),
        AveragePooling2D(2),
        Flatten(),
        Dense(5, activation="softmax"),
    ])


def test_training_step_runs_pool_grads_on_the_template():
    from kcomp.compiler import train_step_graph

    model = pooling_cnn()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    templates = {
        n.op: k.attrs["template"] for k in fused.nodes if k.op == "kernel" for n in k.attrs["body"].nodes
    }
    assert templates["max_pool2d_grad"] == templates["avg_pool2d_grad"] == "pool2d_grad"
    assert not [n.op for n in fused.nodes if n.op.endswith("pool2d_grad")]  # none left unfused
    # Each conv's relu gradient (threshold_grad) is its pool gradient's epilogue, not a launch of its own.
    pool_grads = [k for k in fused.nodes if k.op == "kernel" and k.attrs["template"] == "pool2d_grad"]
    for kernel in pool_grads:
        assert [n.op for n in kernel.attrs["body"].nodes if n.op != "constant"][1:] == ["threshold_grad"]
    assert not [k for k in fused.nodes if k.op == "kernel" and k.attrs["template"] == "pointwise"
                and "threshold_grad" in [n.op for n in k.attrs["body"].nodes]]


def test_compiled_training_step_equals_the_reference_step():
    import kcomp

    rng = np.random.default_rng(22)
    # Whole numbers in the image: the first conv's ReLU outputs tie often inside the pool windows.
    x = rng.integers(-2, 3, size=(6, 9, 11, 3)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 5, 6), 5)
    assert_compiled_steps_match_the_reference(pooling_cnn, x, y)


def test_build_train_explains_max_pool_grad_and_relu_mask_as_one_kernel(tmp_path):
    stdout = explain_training_build(tmp_path)
    lines = [line for line in stdout if "(max_pool2d_grad) + " in line and "(threshold_grad) -> kernel" in line]
    assert len(lines) == 2 and all(line.endswith("[pool2d_grad]") for line in lines), stdout
    assert not [line for line in stdout if "(threshold_grad) -> kernel" in line and line.endswith("[pointwise]")], stdout


# -- AOT for sm_90, in a child process ------------------------------------------------

AOT_CASES = [  # (op, geometry, image, with relu's mask) at batch 128, compiled in float32 and bfloat16
    ("max_pool2d_grad", "2x2-stride2-valid", (28, 28, 32), False),
    ("max_pool2d_grad", "3x3-stride1-same", (28, 28, 128), False),  # the most windows, the widest channel block
    ("max_pool2d_grad", "3x3-stride1-same", (28, 28, 128), True),  # and the mask's tile of h in the epilogue
    ("avg_pool2d_grad", "3x3-stride2-same", (27, 27, 64), False),
    ("avg_pool2d_grad", "2x2-stride2-valid", (28, 28, 32), True),
]


def compile_cases(cases) -> list[dict]:
    """The child's job: each case's kernel compiled for sm_90; its resources."""
    from kcomp.runtime.aot import compile_node

    records = []
    for op, geometry, image, masked in cases:
        make_graph = masked_pool_grad_graph if masked else pool_grad_graph
        kernel = the_kernel(make_graph(op, GEOMETRIES[geometry], tuple(image)))
        for dtype in ("float32", "bfloat16"):
            result = compile_node(kernel, 0, target="sm_90", batch=128, float_dtype=None if dtype == "float32" else dtype)
            records.append({"case": f"{op} {geometry} {dtype}{' masked' if masked else ''}", "ptx_target": "sm_90a" if ".target sm_90a" in result.ptx
                            else None, "spill_bytes": result.spill_bytes, "local_stores": result.local_stores(),
                            "registers": result.registers})
    return records


@pytest.mark.slow
def test_pool_grad_kernels_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=300)
    assert len(records) == 2 * len(AOT_CASES)
    for rec in records:
        assert rec["ptx_target"] == "sm_90a", rec
        assert rec["spill_bytes"] == 0 and rec["local_stores"] == 0, rec


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
