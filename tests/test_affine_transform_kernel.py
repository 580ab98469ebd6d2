"""The affine_transform op's gradient and kernel (kernels/augment.py), without Keras (its numbers
against Keras: tests/test_augmentation.py).

4. The gradient w.r.t. the image against torch.autograd in float64.
5. The kernel under the interpreter against the reference, with the augment_params it draws in
   (every geometric layer), in float64, and in a compiled training step.
6. sm_90 AOT without spills or local memory, in a child process.
"""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.registry import OPS
from kcomp.layers import Input, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation, RandomZoom

from augmentation_helpers import FILL_MODES, INTERPOLATIONS, affine, fused_step_after_training_two_steps, images, random_transforms


# ---------------------------------------------------------------- 4. the gradient w.r.t. the image


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_affine_transform_grad_is_autograd_of_the_reference_in_float64(fill_mode, interpolation):
    x = images(3, 6, 7, 2).double().requires_grad_()
    t = random_transforms(3, 6, 7, seed=4).double()
    dy = torch.randn(3, 6, 7, 2, dtype=torch.float64)
    (want,) = torch.autograd.grad(affine(x, t, fill_mode=fill_mode, interpolation=interpolation, fill_value=2.0), x, dy)
    got = OPS["affine_transform_grad"].reference(dy, t, interpolation=interpolation, fill_mode=fill_mode,
                                                 fill_value=2.0, input_size=(6, 7))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output_size", [None, (4, 5)])
def test_vjp_rules_against_autograd_in_float64(output_size):
    from vjp_harness import check_vjp

    x = images(3, 6, 7, 2).double().numpy()
    t = random_transforms(3, 6, 7, seed=5).double().numpy()
    check_vjp("affine_transform", [x, t], {"fill_mode": "reflect", "output_size": output_size}, wrt=[0])
    check_vjp("random_brightness", [x, np.float64(3.0)], {"factor": (-0.2, 0.4, 255.0), "seed": 3, "image_size": 84},
              wrt=[0])


# ---------------------------------------------------------------- 5. the affine_transform kernel (interpreter)


def _augmented_model(layer, shape):
    """The layer called with training=True kept with the call: the graph draws (at step 0) and resamples."""
    x = Input(shape=shape)
    return kcomp.Model(x, layer(x, training=True))


GEOMETRIC_LAYERS = {  # the kernel draws every transform; a rotation's cos and sin are kernels/trig.py's
    "rotation": (lambda **kw: RandomRotation(0.4, **kw), "resampling"),
    "zoom": (lambda **kw: RandomZoom((-0.5, 0.3), (0.1, 0.6), **kw), "exact"),
}


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize("kind", list(GEOMETRIC_LAYERS))
def test_kernel_equals_the_reference_bit_for_bit(kind, fill_mode, interpolation):
    from kernel_helpers import assert_compiled_matches_reference, kernels_of, with_nonfinite

    make, tolerance = GEOMETRIC_LAYERS[kind]
    model = _augmented_model(make(fill_mode=fill_mode, interpolation=interpolation, seed=9, fill_value=-3.5), (7, 9, 5))
    x = with_nonfinite(images(3, 7, 9, 5))  # NaN and inf spread into the taps that read them, as in torch
    x[0, 3, 4, 1], x[1, 3, 4, 2] = float("nan"), float("inf")  # at the centre, which every transform here reads
    compared = assert_compiled_matches_reference(model, [x], kind=tolerance)
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "affine_transform" and kernel.attrs["roles"] == ("prologue", "anchor")
    assert [n.op for n in compared.fused.nodes] == ["kernel"]
    assert compared.got[0].isnan().any()


def test_brightness_is_drawn_inline_by_the_pointwise_kernel_bit_for_bit():
    from kernel_helpers import assert_compiled_matches_reference, kernels_of, with_nonfinite

    model = _augmented_model(RandomBrightness((-0.3, 0.5), value_range=(-50, 200), seed=8), (5, 7, 3))
    compared = assert_compiled_matches_reference(model, [with_nonfinite(images(6, 5, 7, 3))], kind="exact")
    (kernel,) = kernels_of(compared.fused)
    assert [n.op for n in compared.fused.nodes] == ["kernel"] and kernel.attrs["template"] == "pointwise"
    assert [n.op for n in kernel.attrs["body"].nodes if n.op != "constant"] == ["random_brightness", "clip"]


@pytest.mark.parametrize("kind, factor", [("zoom", (-0.3, 0.3)), ("crop", (4, 5))])
def test_a_transform_read_twice_is_drawn_and_written_by_the_kernel(kind, factor):
    from kernel_helpers import assert_compiled_matches_reference, kernels_of
    from kcomp.ir import GraphBuilder

    b = GraphBuilder("twice")
    x = b.input((None, 6, 7, 2), "float32", "x")
    t = b.emit1("augment_params", [x], kind=kind, factor=factor, seed=4)
    size = factor if kind == "crop" else None
    graph = b.finish([b.emit1("affine_transform", [x, t], output_size=size), t])  # the graph returns the transform too
    compared = assert_compiled_matches_reference(graph, [images(3, 6, 7, 2)], kind="exact")
    assert [n.op for n in compared.fused.nodes] == ["kernel"]
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["roles"] == ("prologue", "anchor") and len(kernel.outputs) == 2


@pytest.mark.parametrize("layer, shape", [
    (RandomFlip(seed=4), (5, 6, 3)),
    (RandomZoom((-0.4, 0.5), (0.2, 0.6), seed=2, fill_mode="reflect"), (6, 11, 37)),  # 37: several channel blocks
    (RandomTranslation(0.5, 0.5, fill_mode="wrap", interpolation="nearest", seed=1), (8, 5, 2)),
    (RandomCrop(3, 4, seed=6), (7, 9, 2)),
])
def test_kernel_serves_every_geometric_layer(layer, shape):
    from kernel_helpers import assert_compiled_matches_reference, kernels_of

    compared = assert_compiled_matches_reference(_augmented_model(layer, shape), [images(4, *shape)], kind="exact")
    assert [k.attrs["template"] for k in kernels_of(compared.fused)] == ["affine_transform"]


def test_kernel_in_float64():
    from kernel_helpers import launch_kernel
    from kcomp.ir import GraphBuilder
    from kcomp.passes import run_pipeline

    b = GraphBuilder("affine64")
    x, t = b.input((None, 6, 7, 2), "float64", "x"), b.input((None, 8), "float32", "t")
    graph = b.finish([b.emit1("affine_transform", [x, t], fill_mode="reflect")])
    fused, _ = run_pipeline(graph)
    (kernel,) = [n for n in fused.nodes if n.op == "kernel"]
    got, want = launch_kernel(graph, kernel, [images(3, 6, 7, 2).double(), random_transforms(3, 6, 7)])
    assert got[0].dtype == torch.float64 and torch.equal(got[0], want[0])


def test_compiled_training_step_with_augmentation_matches_the_reference():
    fused = fused_step_after_training_two_steps(lambda: [
        RandomFlip(), RandomRotation(0.2), RandomContrast(0.3, value_range=(0, 1)),
        RandomBrightness(0.1, value_range=(0, 1))], seed=5)
    # Inside the step, the geometric layers' draws are their kernels' prologues, reading the step.
    affine = [n for n in fused.nodes if n.op == "kernel" and n.attrs["template"] == "affine_transform"]
    assert [k.attrs["roles"] for k in affine] == [("prologue", "anchor")] * 2  # the flip's and rotation's drawn inside
    inner = [n for k in affine for n in k.attrs["body"].nodes]
    draws = [n for n in (*fused.nodes, *inner) if n.op == "augment_params"]
    assert sorted(n.attrs["kind"] for n in draws) == ["flip_horizontal_and_vertical", "rotation"]
    inline = []
    for op in ("random_contrast", "random_brightness"):
        (kernel,) = [k for k in fused.nodes if k.op == "kernel" and any(n.op == op for n in k.attrs["body"].nodes)]
        assert kernel.attrs["template"] == "pointwise"  # drawn inline, with the clip after it
        inline += [n for n in kernel.attrs["body"].nodes if n.op == op]
    assert all(n.inputs[-1].shape == () and len(n.inputs) >= 2 for n in draws + inline)  # the step: a new draw every step


# ---------------------------------------------------------------- 6. AOT for a GPU (sm_90), in a child process

# [dtype, fill_mode, interpolation, the kind augment_params draws in the kernel or None (a transform input)]
AOT_CASES = [[dtype, fill_mode, interpolation, None] for dtype in ("float32", "bfloat16")
             for fill_mode in FILL_MODES for interpolation in INTERPOLATIONS]
AOT_CASES += [[dtype, fill_mode, interpolation, "rotation"] for dtype in ("float32", "bfloat16")
              for fill_mode in FILL_MODES for interpolation in INTERPOLATIONS]
AOT_CASES += [["bfloat16", "constant", "bilinear", "zoom"],
              ["float32", "wrap", "nearest", "translation"], ["float32", "nearest", "nearest", "crop"],
              ["float32", "nearest", "nearest", "flip_horizontal_and_vertical"]]
DRAWN_FACTORS = {"rotation": (-0.3, 0.4), "zoom": (-0.2, 0.2, 0.1, 0.3), "translation": (-0.1, 0.1, -0.2, 0.2),
                 "crop": (48, 40), "flip_horizontal_and_vertical": ()}


def compile_cases(cases) -> list[dict]:
    """The affine_transform kernel of each (dtype, fill_mode, interpolation), compiled for sm_90
    at 32 RGB images of 64 x 64."""
    from kcomp.ir import GraphBuilder
    from kcomp.passes import run_pipeline
    from kcomp.runtime.aot import compile_node

    records = []
    for dtype, fill_mode, interpolation, kind in cases:
        b = GraphBuilder("affine_aot")
        x = b.input((None, 64, 64, 3), dtype, "x")
        if kind is None:
            t, size = b.input((None, 8), "float32", "t"), None
        else:
            step = b.input((), "float32", "step")
            t = b.emit1("augment_params", [x, step], kind=kind, factor=DRAWN_FACTORS[kind], seed=7)
            size = DRAWN_FACTORS[kind] if kind == "crop" else None
        fused, _ = run_pipeline(b.finish([b.emit1("affine_transform", [x, t], fill_mode=fill_mode,
                                                  interpolation=interpolation, output_size=size)]))
        (node,) = [n for n in fused.nodes if n.op == "kernel"]
        result = compile_node(node, 0, target="sm_90", batch=32)
        records.append({"case": [dtype, fill_mode, interpolation, kind], "roles": list(node.attrs["roles"]),
                        "template": node.attrs["template"], **result.resources(), "local_stores": result.local_stores()})
    return records


@pytest.mark.slow
def test_kernel_compiles_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=600)
    assert [r["case"] for r in records] == AOT_CASES
    for r in records:
        assert r["template"] == "affine_transform" and r["spill_bytes"] == 0 and r["local_stores"] == 0, r
        assert r["roles"] == (["anchor"] if r["case"][3] is None else ["prologue", "anchor"]), r


if __name__ == "__main__":  # the AOT child: python tests/test_affine_transform_kernel.py CASES_JSON ANSWER_PATH
    import json
    import sys
    from pathlib import Path

    Path(sys.argv[2]).write_text(json.dumps(compile_cases(json.loads(sys.argv[1])), default=str))
