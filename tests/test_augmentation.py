"""Augmentation layers and their ops (kcomp/layers/augmentation.py, kcomp/ir/ops/augment.py).

1. Given the same parameters, the outputs are Keras 3's: affine_transform against
   keras.ops.image.affine_transform for every fill_mode and interpolation; each layer against the
   Keras layer with a fixed draw (factor (a, a)) or fed kcomp's drawn parameters.
2. The draws: distributions over many images match the arguments (flip frequency, angles, zooms,
   translations, crop offsets), with fixed seeds so the bounds are deterministic.
3. Seeding: a fixed seed gives the same batches, every step draws anew, predict is the identity.
The gradient and the kernels: tests/test_affine_transform_kernel.py (no Keras needed there).
"""

import math

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import KcompError
from kcomp.ir.registry import OPS
from kcomp.layers import (
    Dense, Flatten, GlobalAveragePooling2D, Input, RandomBrightness, RandomContrast, RandomCrop, RandomFlip, RandomRotation, RandomTranslation,
    RandomZoom,
)
from kcomp.models import Sequential

from augmentation_helpers import FILL_MODES, INTERPOLATIONS, affine, images, params, random_transforms

keras = pytest.importorskip("keras")



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


def test_integer_images_come_out_float32_as_keras():
    x = torch.randint(0, 256, (4, 5, 6, 3), dtype=torch.int32)
    for layer in (RandomFlip(seed=1), RandomRotation(0.2)):
        assert layer(x).dtype == torch.float32 and layer(x, training=False).dtype == torch.float32
    ours = RandomFlip(seed=1)(x, training=False)
    assert torch.equal(ours, torch.as_tensor(np.asarray(keras.layers.RandomFlip()(x, training=False))))


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


@pytest.mark.parametrize("make", [
    lambda lib: lib.layers.RandomRotation(1.5),
    lambda lib: lib.layers.RandomRotation((0.1, 0.2, 0.3)),
    lambda lib: lib.layers.RandomZoom(-1.0),
    lambda lib: lib.layers.RandomZoom(0.2, (-1.0, 0.5)),
    lambda lib: lib.layers.RandomTranslation(0.1, 1.2),
    lambda lib: lib.layers.RandomContrast(-0.5),
    lambda lib: lib.layers.RandomContrast(1.5),
    lambda lib: lib.layers.RandomBrightness(-1.5),
    lambda lib: lib.layers.RandomBrightness(0.1, value_range=5),
    lambda lib: lib.layers.RandomRotation(0.1, fill_mode="mirror"),
    lambda lib: lib.layers.RandomZoom(0.1, interpolation="bicubic"),
], ids=["rotation-factor", "rotation-triple", "zoom-minus-one", "zoom-width", "translation", "contrast-negative",
        "contrast-above-one", "brightness", "value-range", "fill-mode", "interpolation"])
def test_bad_arguments_raise_where_keras_raises(make):
    with pytest.raises(Exception):
        make(keras)
    with pytest.raises(KcompError, match="Received"):
        make(kcomp)


def test_factor_forms_as_keras():
    assert RandomRotation(0.2).factor == tuple(keras.layers.RandomRotation(0.2).factor) == (-0.2, 0.2)
    assert RandomRotation((0.3, -0.1)).factor == (-0.1, 0.3)
    assert RandomContrast(0.3).factor == tuple(keras.layers.RandomContrast(0.3).factor) == (0.0, 0.3)
    assert RandomBrightness(0.3).factor == tuple(keras.layers.RandomBrightness(0.3).factor) == (-0.3, 0.3)
    assert RandomZoom(1.0)._factor == (-1.0, 1.0)  # Keras checks the number given, not -|f|
    keras.layers.RandomZoom(1.0)
    with pytest.raises(KcompError, match="mode"):  # Keras takes it and fails only when called
        RandomFlip("diagonal")


def _augmented_classifier(lib):
    L = lib.layers
    return lib.Sequential([
        lib.Input((8, 8, 3)), L.RandomFlip("horizontal", seed=1), L.RandomRotation(0.1, fill_mode="nearest"),
        L.RandomZoom((-0.2, 0.2), 0.1, interpolation="nearest"), L.RandomTranslation(0.1, 0.2, fill_value=2.0),
        L.RandomContrast(0.2, value_range=(0, 1)), L.RandomBrightness(0.1, value_range=(0, 1)), L.RandomCrop(8, 8),
        L.GlobalAveragePooling2D(), L.Dense(2)])


def test_keras_files_with_augmentation_load_both_ways(tmp_path):
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype("float32")
    theirs = _augmented_classifier(keras)
    theirs.save(tmp_path / "keras.keras")
    ours = kcomp.models.load_model(tmp_path / "keras.keras")
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    ours.save(tmp_path / "kcomp.keras")
    back = keras.models.load_model(tmp_path / "kcomp.keras")
    for a, b in zip(back.layers, keras.models.load_model(tmp_path / "keras.keras").layers, strict=True):
        assert type(a) is type(b)
        config_a, config_b = a.get_config(), b.get_config()
        assert {k: config_a[k] for k in config_b if k != "name"} == {k: config_b[k] for k in config_b if k != "name"}


# ---------------------------------------------------------------- 2. distributions of the draws


def ks_uniform(values, lower, upper):
    """Kolmogorov-Smirnov statistic of values against uniform [lower, upper), and its 1% bound."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    assert v.min() >= lower - 1e-5 and v.max() <= upper + 1e-5
    return stats.kstest(v, stats.uniform(loc=lower, scale=upper - lower).cdf).statistic, 1.63 / math.sqrt(len(v))


BIG = images(4000, 6, 8, 1)


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_each_image_flips_with_probability_one_half(mode):
    t = params(BIG, f"flip_{mode}", seed=11, step=3)
    flipped = (t[:, 0] < 0) | (t[:, 4] < 0)
    assert abs(float(flipped.double().mean()) - 0.5) < 4 * math.sqrt(0.25 / len(BIG))
    if mode == "horizontal_and_vertical":  # Keras: one draw flips both axes
        assert torch.equal(t[:, 0] < 0, t[:, 4] < 0)


def test_angles_are_uniform_over_the_factor_times_two_pi():
    layer = RandomRotation((-0.2, 0.3))
    t = params(BIG, "rotation", layer.factor, seed=12, step=1)
    angle = torch.atan2(t[:, 3], t[:, 0])  # b0 = sin, a0 = cos
    d, bound = ks_uniform(angle, -0.2 * 2 * math.pi, 0.3 * 2 * math.pi)
    assert d < bound
    torch.testing.assert_close(t[:, 1], -t[:, 3])  # a rotation: a1 = -sin
    torch.testing.assert_close(t[:, 4], t[:, 0])


@pytest.mark.parametrize("width_factor", [None, (-0.5, 0.1)])
def test_zoom_factors_are_uniform_in_range(width_factor):
    layer = RandomZoom((-0.3, 0.4), width_factor)
    t = params(BIG, "zoom", layer._factor, seed=13, step=2)
    zoom_h, zoom_w = t[:, 4], t[:, 0]
    d, bound = ks_uniform(zoom_h, 0.7, 1.4)
    assert d < bound
    if width_factor is None:
        assert torch.equal(zoom_w, zoom_h)
    else:
        d, bound = ks_uniform(zoom_w, 0.5, 1.1)
        assert d < bound and abs(np.corrcoef(zoom_h, zoom_w)[0, 1]) < 0.06  # two independent draws


def test_translations_are_uniform_fractions_of_the_size():
    layer = RandomTranslation(0.25, (-0.1, 0.4))
    t = params(BIG, "translation", layer._factor, seed=14, step=5)
    for shift, size, (lower, upper) in ((-t[:, 5], 6, (-0.25, 0.25)), (-t[:, 2], 8, (-0.1, 0.4))):
        d, bound = ks_uniform(shift / size, lower, upper)
        assert d < bound


def test_crop_offsets_are_uniform_over_every_window():
    from scipy import stats

    x = images(2, 9, 11, 1)
    tops = [int(params(x, "crop", (4, 6), seed=15, step=s)[0, 5]) for s in range(1, 1201)]
    counts = np.bincount(tops, minlength=6)
    assert len(counts) == 6  # offsets 0 .. 9 - 4
    assert stats.chisquare(counts).pvalue > 0.001


@pytest.mark.parametrize("layer, lower, upper", [
    (RandomContrast(0.4), 1.0, 1.4),  # Keras: a number f draws in [1 - 0, 1 + f]
    (RandomContrast((0.2, 0.5)), 0.8, 1.5),
])
def test_contrast_factors_are_uniform_in_range(layer, lower, upper):
    d, bound = ks_uniform(params(BIG, "contrast", layer.factor, seed=16, step=1).flatten(), lower, upper)
    assert d < bound


@pytest.mark.parametrize("layer, lower, upper", [
    (RandomBrightness(0.2, value_range=(0, 1)), -0.2, 0.2),
    (RandomBrightness((-0.1, 0.3), value_range=(0, 255)), -25.5, 76.5),
])
def test_brightness_deltas_are_uniform_in_range_one_per_image(layer, lower, upper):
    width = float(layer.value_range[1] - layer.value_range[0])
    shifted = OPS["random_brightness"].reference(BIG, torch.tensor(1.0), factor=(*layer.factor, width), seed=16,
                                                 image_size=48)
    delta = (shifted.double() - BIG.double()).reshape(len(BIG), -1)
    assert torch.allclose(delta, delta[:, :1], atol=1e-3)  # the same delta over each image
    d, bound = ks_uniform(delta[:, 0], lower - 1e-3, upper + 1e-3)
    assert d < bound


# ---------------------------------------------------------------- 3. seeding, steps, inference


def test_same_seed_and_step_same_draws_a_new_step_or_seed_new_ones():
    x = images(64, 5, 5, 1)
    first = params(x, "rotation", (-0.5, 0.5), seed=21, step=4)
    assert torch.equal(first, params(x, "rotation", (-0.5, 0.5), seed=21, step=4))
    for other in (params(x, "rotation", (-0.5, 0.5), seed=21, step=5), params(x, "rotation", (-0.5, 0.5), seed=22, step=4)):
        assert not torch.isclose(first[:, 0], other[:, 0]).any()


def test_the_draws_never_read_the_step_on_the_host():
    # Meta tensors have no data: any int() / .item() of the step would raise.
    x, step = torch.empty(6, 5, 7, 3, device="meta"), torch.empty((), device="meta")
    out = OPS["augment_params"].reference(x, step, kind="zoom", factor=(-0.2, 0.2), seed=3)
    assert out.device.type == "meta" and out.shape == (6, 8)


def _flip_model(seed=3):
    model = Sequential([Input(shape=(4, 5, 2)), RandomFlip("horizontal", seed=seed), Flatten(), Dense(1, use_bias=False)])
    model.compile(optimizer=kcomp.optimizers.SGD(learning_rate=0.01), loss="mse", backend="reference")
    return model


def _fit_two_steps(model, weights, x, y):
    model.set_weights(weights)
    model.fit(x.numpy(), y.numpy(), batch_size=6, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()[0]


def test_fit_draws_from_the_seed_at_each_step_number():
    x, y = images(6, 4, 5, 2) / 255.0, torch.rand(6, 1)
    model = _flip_model()
    w0 = model.get_weights()
    trained = _fit_two_steps(model, w0, x, y)
    w = torch.from_numpy(w0[0])
    for step in (1, 2):  # the replica: the batch flipped as the layer's draws at this step number say
        flipped = affine(x, params(x, "flip_horizontal", seed=3, step=step), interpolation="nearest", fill_mode="nearest")
        features = flipped.reshape(6, -1)
        w = w - 0.01 * 2 * features.T @ (features @ w - y) / 6
    np.testing.assert_allclose(trained, w.numpy(), rtol=1e-5, atol=1e-6)


def test_a_fixed_seed_trains_the_same_twice_another_seed_differently():
    x, y = images(6, 4, 5, 2) / 255.0, torch.rand(6, 1)
    w0 = _flip_model().get_weights()
    first, second, other = (_fit_two_steps(_flip_model(seed), w0, x, y) for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_predict_and_evaluate_leave_the_images_unchanged():
    x, y = images(6, 4, 5, 2) / 255.0, torch.rand(6, 1)
    model = Sequential([Input(shape=(4, 5, 2)), RandomFlip(seed=1), RandomRotation(0.3), RandomZoom(0.2),
                        RandomTranslation(0.2, 0.2), RandomContrast(0.5, value_range=(0, 1)),
                        RandomBrightness(0.2, value_range=(0, 1)), Flatten(), Dense(1, use_bias=False)])
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    w = torch.from_numpy(model.get_weights()[0])
    plain = x.reshape(6, -1) @ w
    np.testing.assert_allclose(model.predict(x.numpy(), verbose=0), plain.numpy(), rtol=1e-5, atol=1e-6)
    loss = model.evaluate(x.numpy(), y.numpy(), verbose=0)
    assert math.isclose(loss, float(((plain - y) ** 2).mean()), rel_tol=1e-5)


AUGMENTED_K = """
model augmented {
  input(8, 8, 1)
  random_flip(horizontal, seed=1)
  random_rotation(0.1, fill_mode=nearest, seed=2)
  random_zoom((-0.2, 0.2), seed=3)
  random_translation(0.1, (-0.2, 0.1), interpolation=nearest, seed=4)
  random_contrast(0.2, value_range=(0, 1), seed=5)
  random_brightness(0.1, value_range=(0, 1), seed=6)
  random_crop(6, 6, seed=7)
  global_average_pooling2d()
  dense(3)
}
"""


def test_k_files_build_the_layers_and_graph_python_builds():
    from kcomp import dsl
    from kcomp.ir import print_graph

    def python():
        return Sequential([Input(shape=(8, 8, 1)), RandomFlip("horizontal", seed=1),
                           RandomRotation(0.1, fill_mode="nearest", seed=2), RandomZoom((-0.2, 0.2), seed=3),
                           RandomTranslation(0.1, (-0.2, 0.1), interpolation="nearest", seed=4),
                           RandomContrast(0.2, value_range=(0, 1), seed=5), RandomBrightness(0.1, value_range=(0, 1), seed=6),
                           RandomCrop(6, 6, seed=7), GlobalAveragePooling2D(), Dense(3)], name="augmented")

    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(0)
    (from_k,) = dsl.loads(AUGMENTED_K, "augmented.k").values()
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(0)
    from_py = python()
    assert [layer.get_config() for layer in from_k.layers] == [layer.get_config() for layer in from_py.layers]
    assert print_graph(from_k.to_graph()) == print_graph(from_py.to_graph())
