"""The augmentation ops' kernels beyond affine_transform's own (tests/test_affine_transform_kernel.py):

1. Per-image operands of the pointwise template ("image": (B, 1, .., 1), "image_col":
   (B, 1, .., 1, C) against (B, ..., C)): RandomContrast's arithmetic is one pointwise kernel after
   its mean reductions, equal to the reference and to Keras fed the same factors.
2. affine_transform_grad's kernel (kernels/augment_grad.py) against the reference and, in
   float64, against torch.autograd of the forward; in a training step where an augmentation
   layer sits after a trainable layer.
3. sm_90 AOT without spills (in a child process) of the gradient kernel, and of the forward's that
   draws a rotation and writes the transform for the gradient.
"""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.layers import Conv2D, Input, RandomBrightness, RandomContrast, RandomRotation, RandomZoom
from kcomp.passes import run_pipeline

from kernel_helpers import assert_compiled_matches_reference, kernels_of, launch_kernel, with_nonfinite
from augmentation_helpers import FILL_MODES, INTERPOLATIONS, images, params, random_transforms


def _augmented_model(layer, shape):
    x = Input(shape=shape)
    return kcomp.Model(x, layer(x, training=True))


# ---------------------------------------------------------------- 1. per-image operands


@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 6, 1), (3, 37)])
def test_pointwise_reads_per_image_values_and_vectors(shape):
    """x * a + b with a (B, 1, .., 1) and b (B, 1, .., C), NaN and inf in all three."""
    batch = 6
    b = GraphBuilder("per_image")
    x = b.input((None, *shape), "float32", "x")
    a = b.input((None, *[1] * len(shape)), "float32", "a")
    v = b.input((None, *[1] * (len(shape) - 1), shape[-1]), "float32", "v")
    graph = b.finish([b.emit1("add", [b.emit1("mul", [x, a]), v])])
    gen = torch.Generator().manual_seed(len(shape))
    inputs = [torch.randn(batch, *shape, generator=gen) for _ in range(1)]
    inputs.append(with_nonfinite(torch.randn(batch, *[1] * len(shape), generator=gen), places=(float("nan"),)))
    inputs.append(with_nonfinite(torch.randn(batch, *[1] * (len(shape) - 1), shape[-1], generator=gen),
                                 places=(float("inf"),)))
    inputs[0] = with_nonfinite(inputs[0])
    compared = assert_compiled_matches_reference(graph, inputs, kind="exact")
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "pointwise" and [n.op for n in compared.fused.nodes] == ["kernel"]
    assert compared.got[0].isnan().any() and compared.got[0].isinf().any()


def test_an_operand_of_another_batch_or_shape_is_not_per_image():
    from kcomp.ir.types import TensorSpec
    from kcomp.kernels.operands import flat_operand_kind

    out = TensorSpec((4, 5, 7, 3), "float32")
    assert flat_operand_kind(TensorSpec((4, 1, 1, 3), "float32"), out) == "image_col"
    assert flat_operand_kind(TensorSpec((4, 1, 1, 1), "float32"), out) == "image"
    assert flat_operand_kind(TensorSpec((4, 5, 1, 3), "float32"), out) is None  # per row of an image: no
    assert flat_operand_kind(TensorSpec((2, 1, 1, 3), "float32"), out) is None
    assert flat_operand_kind(TensorSpec((4, 1, 1, 2), "float32"), out) is None
    assert flat_operand_kind(TensorSpec((1, 1, 1, 3), "float32"), out) == "col"  # as before


def test_contrast_is_one_pointwise_kernel_after_the_mean_equal_to_the_reference():
    model = _augmented_model(RandomContrast((0.3, 0.6), value_range=(0, 255), seed=4), (5, 7, 3))
    x = with_nonfinite(images(6, 5, 7, 3))
    # The means are reduce kernels (their sums' order is not torch's): an ulp of the mean moves each output by one.
    compared = assert_compiled_matches_reference(model, [x], kind="elementwise")
    templates = [k.attrs["template"] for k in kernels_of(compared.fused)]
    assert templates == ["reduce", "reduce", "pointwise"]
    assert [n.op for n in compared.fused.nodes] == ["kernel"] * 3  # the factors drawn in the pointwise kernel
    (body,) = [k.attrs["body"] for k in kernels_of(compared.fused) if k.attrs["template"] == "pointwise"]
    assert [n.op for n in body.nodes if n.op != "constant"] == ["random_contrast", "clip"]
    assert [tuple(v.shape[1:]) for v in body.inputs] == [(5, 7, 3), (1, 1, 3)]
    assert compared.got[0].isnan().any()  # a NaN pixel's channel mean is NaN: its channel of that image too


def test_compiled_contrast_equals_keras_fed_the_same_factors():
    keras = pytest.importorskip("keras")
    from kcomp.runtime.executor import PlanExecutor

    x = images(4, 6, 5, 3)
    model = _augmented_model(RandomContrast(0.7, value_range=(0, 255), seed=3), (6, 5, 3))
    (got,) = PlanExecutor(model.to_graph(), "triton-interpret", "tf32").run([x], model.params())
    factor = params(x, "contrast", model.layers[-1].factor, seed=3)
    theirs = keras.layers.RandomContrast(0.7, value_range=(0, 255)).transform_images(
        x, {"contrast_factor": factor}, training=True)
    np.testing.assert_allclose(got.numpy(), np.asarray(theirs), rtol=1e-5, atol=1e-3)


def test_contrast_vjp_against_autograd_in_float64():
    from vjp_harness import check_vjp

    x = images(3, 5, 6, 2).double().numpy()
    mean = x.mean(axis=(1, 2), keepdims=True) + 0.25  # not the images' own: the two gradients apart
    check_vjp("random_contrast", [x, mean, np.float64(2.0)], {"factor": (0.3, 0.6), "seed": 3, "image_size": 60},
              wrt=[0, 1])
    check_vjp("random_contrast", [x, mean[:, :, :, :1]], {"factor": (0.0, 0.9), "image_size": 60}, wrt=[0, 1])


def test_contrast_draws_are_augment_params_draws():
    """random_contrast's factors are augment_params' contrast factors (the ones Keras is fed above)."""
    x = images(7, 3, 4, 2)
    mean = torch.zeros(7, 1, 1, 2)
    for step in (None, 5):
        scaled = OPS["random_contrast"].reference(x, mean, *([] if step is None else [torch.tensor(5.0)]),
                                                  factor=(0.2, 0.7), seed=11, image_size=24)
        factor = params(x, "contrast", (0.2, 0.7), seed=11, step=step)
        assert torch.equal(scaled, x * factor)


def test_contrast_of_a_mean_that_does_not_broadcast_is_refused():
    from kcomp.errors import ShapeError
    from kcomp.ir.types import TensorSpec

    infer = OPS["random_contrast"].infer
    with pytest.raises(ShapeError, match="broadcast"):
        infer([TensorSpec((4, 5, 6, 3), "float32"), TensorSpec((4, 1, 1, 2), "float32")], factor=(0.1, 0.1), seed=0,
              image_size=90)
    with pytest.raises(ShapeError, match="image_size"):
        infer([TensorSpec((4, 5, 6, 3), "float32"), TensorSpec((4, 1, 1, 3), "float32")], factor=(0.1, 0.1), seed=0,
              image_size=91)


def test_brightness_stays_one_pointwise_kernel():
    model = _augmented_model(RandomBrightness((-0.3, 0.5), value_range=(0, 1), seed=8), (3, 4, 2))
    compared = assert_compiled_matches_reference(model, [images(5, 3, 4, 2) / 255.0], kind="exact")
    assert [k.attrs["template"] for k in kernels_of(compared.fused)] == ["pointwise"]


# ---------------------------------------------------------------- 2. the gradient kernel


def _grad_graph(dtype, in_size, out_size, **attrs):
    b = GraphBuilder("affine_grad")
    dy = b.input((None, *out_size, 3), dtype, "dy")
    t = b.input((None, 8), "float32" if dtype != "float64" else "float64", "t")
    return b.finish([b.emit1("affine_transform_grad", [dy, t], input_size=in_size, **attrs)])


def _grad_kernel(graph):
    fused, _ = run_pipeline(graph)
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "affine_transform_grad" and [n.op for n in fused.nodes] == ["kernel"]
    return kernel


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_grad_kernel_equals_the_reference(fill_mode, interpolation):
    from kernel_helpers import assert_matches_reference

    graph = _grad_graph("float32", (6, 7), (5, 9), fill_mode=fill_mode, interpolation=interpolation, fill_value=2.0)
    gen = torch.Generator().manual_seed(7)
    dy = with_nonfinite(torch.randn(3, 5, 9, 3, generator=gen))
    t = random_transforms(3, 6, 7, seed=2)
    # Into a NaN-poisoned buffer: the launch zeroes what it adds into. Several terms meet at a pixel
    # in another order than index_put_'s: a few roundings.
    got, want = launch_kernel(graph, _grad_kernel(graph), [dy, t], poison=False)
    assert_matches_reference(got, want, kind="elementwise")
    got_poisoned, _ = launch_kernel(graph, _grad_kernel(graph), [dy, t])
    assert torch.equal(got_poisoned[0].isnan(), want[0].isnan())


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_grad_kernel_is_autograd_of_the_forward_in_float64(fill_mode, interpolation):
    x = images(3, 6, 7, 3).double().requires_grad_()
    t = random_transforms(3, 6, 7, seed=4).double()
    attrs = dict(interpolation=interpolation, fill_mode=fill_mode, fill_value=2.0)
    dy = torch.randn(3, 4, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    forward = OPS["affine_transform"].reference(x, t, output_size=(4, 8), **attrs)
    (want,) = torch.autograd.grad(forward, x, dy)
    graph = _grad_graph("float64", (6, 7), (4, 8), **attrs)
    got, _ = launch_kernel(graph, _grad_kernel(graph), [dy, t])
    assert got[0].dtype == torch.float64
    torch.testing.assert_close(got[0], want, rtol=1e-12, atol=1e-12)


def test_a_drawn_zoom_in_sums_many_terms_into_a_pixel():
    """A zoom of 0.3 reads a small centre region: each of its pixels gathers ~10 output gradients."""
    from kernel_helpers import assert_matches_reference

    x = images(2, 8, 9, 3)
    t = params(x, "zoom", (-0.7, -0.7), seed=1)
    graph = _grad_graph("float32", (8, 9), (8, 9), fill_mode="nearest")
    dy = torch.randn(2, 8, 9, 3, generator=torch.Generator().manual_seed(3))
    got, want = launch_kernel(graph, _grad_kernel(graph), [dy, t])
    assert_matches_reference(got, want, kind="accumulating")
    assert (want[0] != 0).sum() < want[0].numel() // 2


def test_training_step_with_augmentation_after_a_trainable_layer():
    from augmentation_helpers import fused_step_after_training_two_steps

    fused = fused_step_after_training_two_steps(lambda: [
        Conv2D(3, 3, padding="same", activation="relu"), RandomRotation(0.2, fill_mode="reflect"),
        RandomZoom(0.2, interpolation="nearest"), RandomContrast(0.4, value_range=(0, 3))], seed=6)
    templates = [k.attrs["template"] for k in kernels_of(fused)]
    assert templates.count("affine_transform_grad") == 2
    assert not {"affine_transform_grad", "augment_params", "random_contrast"} & {n.op for n in fused.nodes}


# ---------------------------------------------------------------- 3. AOT for a GPU (sm_90), in a child process

# [template, dtype, fill_mode, interpolation]: the gradient's kernels, and the forward's that draws a
# rotation and also writes the transform (the gradient reads it).
AOT_CASES = [["affine_transform_grad", dtype, fill_mode, interpolation] for dtype in ("float32", "bfloat16")
             for fill_mode in FILL_MODES for interpolation in INTERPOLATIONS]
AOT_CASES += [["affine_transform", dtype, "reflect", interpolation] for dtype in ("float32", "bfloat16")
              for interpolation in INTERPOLATIONS]


def _forward_writing_its_transform(dtype, fill_mode, interpolation):
    b = GraphBuilder("affine_stored")
    x, step = b.input((None, 64, 64, 3), dtype, "x"), b.input((), "float32", "step")
    t = b.emit1("augment_params", [x, step], kind="rotation", factor=(-0.3, 0.4), seed=7)
    graph = b.finish([b.emit1("affine_transform", [x, t], fill_mode=fill_mode, interpolation=interpolation), t])
    (kernel,) = kernels_of(run_pipeline(graph)[0])
    assert kernel.attrs["roles"] == ("prologue", "anchor") and len(kernel.outputs) == 2
    return kernel


def compile_cases(cases) -> list[dict]:
    """Each case's kernel compiled for sm_90 at 32 RGB images of 64 x 64."""
    from kcomp.runtime.aot import compile_node

    records = []
    for template, dtype, fill_mode, interpolation in cases:
        if template == "affine_transform_grad":
            node = _grad_kernel(_grad_graph(dtype, (64, 64), (64, 64), fill_mode=fill_mode, interpolation=interpolation))
        else:
            node = _forward_writing_its_transform(dtype, fill_mode, interpolation)
        result = compile_node(node, 0, target="sm_90", batch=32)
        records.append({"case": [template, dtype, fill_mode, interpolation], **result.resources(),
                        "local_stores": result.local_stores()})
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=600)
    assert [r["case"] for r in records] == AOT_CASES
    for r in records:
        assert r["template"] == r["case"][0] and r["spill_bytes"] == 0 and r["local_stores"] == 0, r


if __name__ == "__main__":  # the AOT child: python tests/test_augmentation_kernels.py CASES_JSON ANSWER_PATH
    import json
    import sys
    from pathlib import Path

    Path(sys.argv[2]).write_text(json.dumps(compile_cases(json.loads(sys.argv[1])), default=str))
