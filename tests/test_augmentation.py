"""Augmentation layers and their ops (kcomp/layers/augmentation.py, kcomp/ir/ops/augment.py).

1. Given the same parameters, the outputs are Keras 3's: affine_transform against
   keras.ops.image.affine_transform for every fill_mode and interpolation; each layer against the
   Keras layer with a fixed draw (factor (a, a)) or fed kcomp's drawn parameters.
2. The draws: distributions over many images match the arguments (flip frequency, angles, zooms,
   translations, crop offsets), with fixed seeds so the bounds are deterministic.
3. Seeding: a fixed seed gives the same batches, every step draws anew, predict is the identity.
4. The gradient w.r.t. the image against torch.autograd in float64.
"""

import math

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import KcompError
from kcomp.ir.registry import OPS
from kcomp.layers import (
    Dense, Flatten, Input, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation,
    RandomZoom,
)
from kcomp.models import Sequential

keras = pytest.importorskip("keras")

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


def images(batch=3, height=7, width=9, channels=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (batch, height, width, channels)).astype("float32"))


def params(x, kind, factor=(), seed=5, step=None):
    inputs = (x,) if step is None else (x, torch.tensor(float(step)))
    return OPS["augment_params"].reference(*inputs, kind=kind, factor=tuple(factor), seed=seed)


def random_transforms(batch, height, width, seed=1):
    """Rotation, zoom and translation together: every coordinate off the pixel grid somewhere."""
    g = np.random.default_rng(seed)
    angle, scale = g.uniform(-math.pi, math.pi, batch), g.uniform(0.6, 1.5, batch)
    tx, ty = g.uniform(-3, 3, batch), g.uniform(-3, 3, batch)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    t = np.stack([cos, -sin, cx - cx * cos + cy * sin + tx, sin, cos, cy - cx * sin - cy * cos + ty,
                  np.zeros(batch), np.zeros(batch)], axis=1)
    return torch.from_numpy(t.astype("float32"))


def affine(x, transform, **attrs):
    attrs = {"interpolation": "bilinear", "fill_mode": "constant", "fill_value": 0.0, "output_size": None, **attrs}
    return OPS["affine_transform"].reference(x, transform, **attrs)


# ---------------------------------------------------------------- 1. Keras's numbers for the same parameters


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("fill_mode", FILL_MODES)
def test_affine_transform_equals_keras(fill_mode, interpolation):
    x = images(4, 7, 9, 3)
    t = random_transforms(4, 7, 9)
    ours = affine(x, t, interpolation=interpolation, fill_mode=fill_mode, fill_value=17.5)
    theirs = keras.ops.image.affine_transform(x, t.clone(), interpolation=interpolation, fill_mode=fill_mode,
                                              fill_value=17.5)
    # Coordinates are summed in another order (an einsum there): at most a last-bit difference,
    # which for "nearest" moves no tap at these off-grid points.
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("fill_mode", FILL_MODES)
@pytest.mark.parametrize(
    "make",
    [
        lambda lib, mode: lib.layers.RandomRotation((0.15, 0.15), fill_mode=mode, fill_value=3.0),
        lambda lib, mode: lib.layers.RandomRotation((-0.3, -0.3), fill_mode=mode, interpolation="nearest"),
        lambda lib, mode: lib.layers.RandomZoom((0.3, 0.3), fill_mode=mode),
        lambda lib, mode: lib.layers.RandomZoom((-0.2, -0.2), (0.4, 0.4), fill_mode=mode, interpolation="nearest"),
        lambda lib, mode: lib.layers.RandomTranslation((0.2, 0.2), (-0.35, -0.35), fill_mode=mode),
    ],
    ids=["rotation", "rotation-nearest", "zoom", "zoom-hw-nearest", "translation"],
)
def test_geometric_layers_with_a_fixed_draw_equal_keras(make, fill_mode):
    x = images(3, 8, 11, 2)
    ours = make(kcomp, fill_mode)(x, training=True)
    theirs = make(keras, fill_mode)(x, training=True)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-5, atol=2e-3)


def test_brightness_with_a_fixed_draw_equals_keras():
    x = images(3, 5, 6, 3)
    ours = RandomBrightness((0.1, 0.1), value_range=(0, 255))(x, training=True)
    theirs = keras.layers.RandomBrightness((0.1, 0.1), value_range=(0, 255))(x, training=True)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-6)
    assert float(ours.max()) == 255.0  # clipped to the value range


def test_contrast_fed_the_drawn_factors_equals_keras():
    x = images(4, 5, 6, 3)
    layer = RandomContrast(0.7, value_range=(0, 255), seed=3)
    ours = layer(x, training=True)
    factor = params(x, "contrast", layer.factor, seed=3)
    assert factor.shape == (4, 1, 1, 1) and len(set(factor.flatten().tolist())) == 4  # one factor per image
    theirs = keras.layers.RandomContrast(0.7, value_range=(0, 255)).transform_images(
        x, {"contrast_factor": factor}, training=True)
    np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_flip_is_an_index_flip_of_the_drawn_images_as_keras(mode):
    x = images(16, 5, 6, 2)
    ours = RandomFlip(mode, seed=2)(x)  # an eager call augments, as Keras's default training=True
    flipped = params(x, f"flip_{mode}", seed=2)[:, 0] < 0  # a0 = -1, or b1 = -1 for vertical
    if mode == "vertical":
        flipped = params(x, "flip_vertical", seed=2)[:, 4] < 0
    assert 0 < int(flipped.sum()) < 16
    theirs = keras.layers.RandomFlip(mode).transform_images(x, {"flips": flipped.reshape(-1, 1, 1, 1)}, training=True)
    assert torch.equal(ours, torch.as_tensor(np.asarray(theirs)))
    dims = {"horizontal": (1,), "vertical": (0,), "horizontal_and_vertical": (0, 1)}[mode]  # of one HWC image
    for b in range(16):
        assert torch.equal(ours[b], torch.flip(x[b], dims) if flipped[b] else x[b])


def test_crop_takes_one_window_per_batch_and_inference_passes_images_as_keras():
    x = images(5, 9, 11, 2)
    layer = RandomCrop(4, 6, seed=7)
    ours = layer(x, training=True)
    t = params(x, "crop", (4, 6), seed=7)
    top, left = int(t[0, 5]), int(t[0, 2])
    assert torch.equal(ours, x[:, top:top + 4, left:left + 6])
    assert torch.equal(layer(x, training=False), x)
    assert tuple(np.asarray(keras.layers.RandomCrop(4, 6)(x, training=False)).shape) == tuple(x.shape)


def test_crop_of_images_no_larger_takes_keras_centred_window():
    x = images(2, 6, 12, 1)
    ours = RandomCrop(6, 8)(x, training=True)
    theirs = keras.layers.RandomCrop(6, 8)(x, training=True)
    assert torch.equal(ours, torch.as_tensor(np.asarray(theirs)))
    with pytest.raises(KcompError, match="resize"):
        RandomCrop(6, 5)(images(2, 4, 4, 1), training=True)  # Keras resizes a centred 4x3 window up
