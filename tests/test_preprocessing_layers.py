"""Preprocessing layers (Rescaling, Normalization, Resizing, CenterCrop) and the resize op:
Keras 3 side by side, the ops' references against numpy, the resize kernel under Triton's
interpreter against the reference (ragged sizes, up and down, NaN and inf), the VJPs in
float64, fusion into the first conv's / Dense's prologue, and an adapted Normalization saved
and loaded. The layer harness cases are PREPROCESSING_CASES (run by tests/test_layers.py)."""

import types

import numpy as np
import pytest
import torch

import kcomp
from kcomp import layers
from kcomp.compiler import explain
from kcomp.errors import KcompError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.models import Sequential

from kernel_helpers import (
    assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, assert_launch_matches_reference, kernels_of,
    randomize, with_nonfinite,
)
from layer_harness import default_weights
from vjp_harness import check_vjp

# Keras's adapt asks isinstance(data, tf.data.Dataset) before it takes an iterable; without
# TensorFlow installed that import fails, so the oracle gets a stand-in class nothing is an instance of.
# Keras is the test extra's oracle; the GPU machine's environment has none, where the tests that
# compare with it skip (needs_keras) and the kernel and reference tests still run.
try:
    import keras
    import keras.src.layers.preprocessing.normalization as _keras_normalization
except ImportError:
    keras = None
else:
    _keras_normalization.tf = types.SimpleNamespace(data=types.SimpleNamespace(Dataset=type("Dataset", (), {})))
needs_keras = pytest.mark.skipif(keras is None, reason="Keras 3 (the test extra's oracle) is not installed")


# ---------------------------------------------------------------- numpy oracles of resize


def _source_bilinear(out_size, in_size):
    """(i0, i1, weight of i1) per output index: align_corners=False, as torch's interpolate."""
    real = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.floor(real).astype(int)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, np.clip(real - i0, 0.0, 1.0)


def _source_nearest(out_size, in_size):
    """torch's "nearest-exact" (Keras's "nearest" on torch)."""
    return np.minimum(np.floor((np.arange(out_size) + 0.5) * (in_size / out_size)).astype(int), in_size - 1)


def resize_numpy(x, height, width, interpolation):
    if interpolation == "nearest":
        return x[:, _source_nearest(height, x.shape[1])][:, :, _source_nearest(width, x.shape[2])]
    h0, h1, lh = _source_bilinear(height, x.shape[1])
    w0, w1, lw = _source_bilinear(width, x.shape[2])
    lh, lw = lh[None, :, None, None], lw[None, None, :, None]
    top = (1 - lw) * x[:, h0][:, :, w0] + lw * x[:, h0][:, :, w1]
    bottom = (1 - lw) * x[:, h1][:, :, w0] + lw * x[:, h1][:, :, w1]
    return (1 - lh) * top + lh * bottom


def resize_grad_numpy(g, height, width, interpolation):
    """The adjoint of resize_numpy: each output pixel's gradient added into the pixels it read."""
    dx = np.zeros((g.shape[0], height, width, g.shape[3]))
    if interpolation == "nearest":
        hs, ws = _source_nearest(g.shape[1], height), _source_nearest(g.shape[2], width)
        for i, h in enumerate(hs):
            for j, w in enumerate(ws):
                dx[:, h, w] += g[:, i, j]
        return dx
    h0, h1, lh = _source_bilinear(g.shape[1], height)
    w0, w1, lw = _source_bilinear(g.shape[2], width)
    for i in range(g.shape[1]):
        for j in range(g.shape[2]):
            for h, a in ((h0[i], 1 - lh[i]), (h1[i], lh[i])):
                for w, b in ((w0[j], 1 - lw[j]), (w1[j], lw[j])):
                    dx[:, h, w] += a * b * g[:, i, j]
    return dx


SIZES = [(9, 11, 4, 5), (9, 11, 17, 23), (7, 5, 7, 5), (6, 13, 13, 6), (1, 3, 5, 1), (10, 10, 3, 7)]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("h, w, oh, ow", SIZES)
def test_resize_reference_is_the_numpy_formula(h, w, oh, ow, interpolation):
    x = np.random.default_rng(h * w + oh).normal(size=(3, h, w, 2))
    got = OPS["resize"].reference(torch.as_tensor(x), height=oh, width=ow, interpolation=interpolation).numpy()
    np.testing.assert_allclose(got, resize_numpy(x, oh, ow, interpolation), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(1).normal(size=(3, oh, ow, 2))
    got = OPS["resize_grad"].reference(torch.as_tensor(g), height=h, width=w, interpolation=interpolation).numpy()
    np.testing.assert_allclose(got, resize_grad_numpy(g, h, w, interpolation), rtol=1e-10, atol=1e-12)


def test_constant_array_reference():
    got = OPS["constant_array"].reference(values=(1.5, -2.0, 3.0), dtype="float32")
    assert got.dtype == torch.float32 and got.tolist() == [1.5, -2.0, 3.0]


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("h, w, oh, ow", [(9, 11, 4, 5), (5, 7, 13, 9), (6, 6, 6, 6)])
def test_resize_vjp_in_float64(h, w, oh, ow, interpolation):
    x = np.random.default_rng(0).normal(size=(2, h, w, 3))
    check_vjp("resize", [x], {"height": oh, "width": ow, "interpolation": interpolation})
    g = np.random.default_rng(1).normal(size=(2, oh, ow, 3))
    check_vjp("resize_grad", [g], {"height": h, "width": w, "interpolation": interpolation})


# ---------------------------------------------------------------- the resize kernel (interpreter)


def _resize_graph(h, w, c, oh, ow, interpolation):
    b = GraphBuilder("resize")
    x = b.input((None, h, w, c), "float32", "x")
    return b.finish([b.emit1("resize", [x], height=oh, width=ow, interpolation=interpolation)])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("h, w, oh, ow", SIZES)
def test_resize_kernel_matches_the_reference(h, w, oh, ow, interpolation):
    graph = _resize_graph(h, w, 3, oh, ow, interpolation)
    x = torch.randn(3, h, w, 3)
    compared = assert_compiled_matches_reference(graph, [x], kind="elementwise")
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "resize"
    assert_launch_matches_reference(graph, kernel, [x], kind="elementwise")  # into poisoned outputs


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resize_kernel_propagates_nan_and_inf_as_torch(interpolation):
    graph = _resize_graph(7, 9, 2, 11, 4, interpolation)
    x = torch.randn(2, 7, 9, 2)
    x[0, 3, :, 0], x[1, :, 3, 1], x[1, 5, :, 0] = float("nan"), float("inf"), float("-inf")  # rows and columns both read
    compared = assert_compiled_matches_reference(graph, [x], kind="elementwise")
    assert not torch.isfinite(compared.want[0]).all()  # the check saw non-finite outputs


# ---------------------------------------------------------------- Keras 3 side by side

KERAS_CASES = [
    ("Rescaling", dict(scale=1 / 255.0)),
    ("Rescaling", dict(scale=[0.5, 2.0, -1.0], offset=[0.1, 0.0, -0.25])),
    ("Rescaling", dict(scale=2.0, offset=-1.0)),
    ("Resizing", dict(height=5, width=4)),
    ("Resizing", dict(height=17, width=23, interpolation="nearest")),
    ("Resizing", dict(height=4, width=13, interpolation="nearest")),
    ("Resizing", dict(height=6, width=5, crop_to_aspect_ratio=True)),
    ("Resizing", dict(height=6, width=5, pad_to_aspect_ratio=True)),
    ("Resizing", dict(height=3, width=12, pad_to_aspect_ratio=True, interpolation="nearest")),
    ("CenterCrop", dict(height=5, width=4)),
    ("CenterCrop", dict(height=9, width=11)),
    ("CenterCrop", dict(height=12, width=4)),  # taller than the image: Keras's smart resize
    ("Normalization", dict(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 0.0])),
    ("Normalization", dict(mean=0.5, variance=2.0, invert=True)),
]


@needs_keras
@pytest.mark.parametrize("name, kwargs", KERAS_CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(KERAS_CASES)])
def test_layer_as_keras_in_a_model(name, kwargs):
    x = np.random.default_rng(3).normal(size=(4, 9, 11, 3)).astype("float32")
    want = np.asarray(getattr(keras.layers, name)(**kwargs)(x))
    model = Sequential([layers.Input(shape=(9, 11, 3)), getattr(layers, name)(**kwargs)])
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _data(seed=0, shape=(53, 6, 4)):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype("float32")


@needs_keras
@pytest.mark.parametrize("axis", [-1, (1, 2), None, 1])
def test_adapt_on_an_array_gives_keras_statistics(axis):
    data = _data()
    ours, theirs = layers.Normalization(axis=axis), keras.layers.Normalization(axis=axis)
    ours.adapt(data)
    theirs.adapt(data)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, np.asarray(b))
    x = _data(1, (5, 6, 4))
    np.testing.assert_allclose(ours(x).numpy(), np.asarray(theirs(x)), rtol=1e-6, atol=1e-6)


@needs_keras
@pytest.mark.parametrize("axis", [-1, (1, 2)])
def test_adapt_on_a_generator_of_batches_gives_keras_statistics(axis):
    data = _data()
    ours, theirs = layers.Normalization(axis=axis), keras.layers.Normalization(axis=axis)
    ours.adapt(data[i:i + 8] for i in range(0, len(data), 8))
    theirs.adapt(data[i:i + 8] for i in range(0, len(data), 8))
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_adapt_steps_and_batch_size():
    data = _data()
    layer = layers.Normalization()
    layer.adapt(data[i:i + 8] for i in range(0, len(data), 8))
    by_batch = layers.Normalization()
    by_batch.adapt(data, batch_size=8)
    np.testing.assert_array_equal(by_batch.get_weights()[0], layer.get_weights()[0])
    first = layers.Normalization()
    first.adapt(iter([data[:8], data[8:16], data[16:]]), steps=2)
    np.testing.assert_allclose(first.get_weights()[0], data[:16].reshape(-1, 4).mean(axis=0), rtol=1e-5)


@needs_keras
def test_integer_pixels_are_rescaled_in_float32_as_keras():
    x = np.random.default_rng(8).integers(0, 256, (2, 5, 6, 3)).astype("uint8")
    for ours, theirs in ((layers.Rescaling(1 / 255.0), keras.layers.Rescaling(1 / 255.0)),
                         (layers.CenterCrop(3, 4), keras.layers.CenterCrop(3, 4))):
        got, want = ours(x), np.asarray(theirs(x))
        assert got.dtype == torch.float32 and want.dtype == np.float32
        np.testing.assert_array_equal(got.numpy(), want)


@needs_keras
def test_unadapted_normalization_is_the_identity_as_in_keras():
    """Keras 3 builds mean 0 and variance 1 and uses them until adapt: it does not raise."""
    x = _data(2, (3, 4))
    np.testing.assert_array_equal(np.asarray(keras.layers.Normalization()(x)), x)
    np.testing.assert_array_equal(layers.Normalization()(x).numpy(), x)


def test_wrong_arguments_raise_kcomp_errors():
    with pytest.raises(KcompError, match="interpolation='bicubic'.*bilinear.*nearest"):
        layers.Resizing(4, 4, interpolation="bicubic")
    with pytest.raises(KcompError, match="antialias"):
        layers.Resizing(4, 4, antialias=True)
    with pytest.raises(KcompError, match="Only one of"):
        layers.Resizing(4, 4, crop_to_aspect_ratio=True, pad_to_aspect_ratio=True)
    with pytest.raises(KcompError, match="both `mean` and `variance`"):
        layers.Normalization(mean=1.0)
    with pytest.raises(KcompError, match="nothing to adapt"):
        layers.Normalization(mean=1.0, variance=1.0).adapt(_data())
    layer = layers.Normalization()
    layer.adapt(_data())
    with pytest.raises(KcompError, match="incompatible shape"):
        layer.adapt(_data(shape=(5, 6, 3)))
    with pytest.raises(KcompError, match="scale"):
        layers.Rescaling("1/255")
    with pytest.raises(KcompError, match="integer images"):
        layers.Resizing(3, 4)(np.ones((1, 5, 6, 3), "uint8"))
    with pytest.raises(KcompError, match="height and width"):
        Sequential([layers.Input(shape=(9, 3)), layers.CenterCrop(2, 2)])


# ---------------------------------------------------------------- fusion: one kernel each


def test_rescaling_fuses_into_the_first_convs_prologue():
    model = Sequential([layers.Input(shape=(9, 11, 3)), layers.Rescaling([0.5, 2.0, -1.0], 0.25),
                        layers.Conv2D(5, 3, padding="same", activation="relu")])
    randomize(model)
    x = with_nonfinite(torch.randn(2, 9, 11, 3))
    compared = assert_compiled_matches_reference(model, [x], kind="accumulating")
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "conv2d"
    assert [n.op for n, role in zip(kernel.attrs["body"].nodes, kernel.attrs["roles"]) if role == "prologue"] == ["mul", "add"]
    assert "rescaling (mul + add) + conv2d (conv2d + bias_add + relu) -> kernel 0 [conv2d]" in explain(compared.fused)


def test_normalization_fuses_into_the_first_dense_prologue():
    norm = layers.Normalization()
    norm.adapt(_data(shape=(40, 23)))
    model = Sequential([layers.Input(shape=(23,)), norm, layers.Dense(19, activation="relu")])
    randomize(model)
    norm.adapt(_data(shape=(40, 23)))  # randomize drew random statistics: adapted ones again
    compared = assert_compiled_matches_reference(model, [torch.randn(5, 23)], kind="accumulating")
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "matmul"
    roles = dict(zip((n.op for n in kernel.attrs["body"].nodes), kernel.attrs["roles"]))
    assert roles["sub"] == roles["div"] == "prologue"
    lines = explain(compared.fused).splitlines()
    assert "normalization (sub + div) + dense (matmul + bias_add + relu) -> kernel 0 [matmul]" in lines
    # The rest is the statistics' reshape, sqrt and max(., 1e-7): computed once per weight update.
    assert all(line.endswith("-> once per weight update (weights only)") for line in lines if "-> kernel" not in line), lines


def test_resizing_then_rescaling_then_conv_runs_two_kernels():
    model = Sequential([layers.Input(shape=(9, 11, 3)), layers.Resizing(6, 7), layers.Rescaling(1 / 255.0),
                        layers.Conv2D(4, 3, activation="relu")])
    randomize(model)
    compared = assert_compiled_matches_reference(model, [torch.randn(2, 9, 11, 3) * 255], kind="accumulating")
    assert [k.attrs["template"] for k in kernels_of(compared.fused)] == ["resize", "conv2d"]


def test_a_model_with_preprocessing_trains_and_keeps_its_statistics():
    norm = layers.Normalization()
    data = _data(shape=(16, 6, 4))
    norm.adapt(data)
    model = Sequential([layers.Input(shape=(6, 4)), layers.Rescaling(0.5), norm, layers.Flatten(), layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in norm.get_weights()]
    dense_before = model.layers[-1].get_weights()[0].copy()
    model.fit(data, np.ones((16, 2), "float32"), epochs=1, batch_size=8, verbose=0)
    for a, b in zip(norm.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(model.layers[-1].get_weights()[0], dense_before)
    assert norm.trainable_weights == [] and len(norm.non_trainable_weights) == 3


def test_compiled_training_steps_with_preprocessing_match_the_reference():
    """A training step's graph with Resizing, Rescaling and Normalization before a conv: valid, no
    gradient into the input, the same losses and weights on the interpreter's kernels."""
    x = np.random.default_rng(6).normal(size=(6, 9, 11, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[np.arange(6) % 3]

    def make_model():
        kcomp.utils.set_random_seed(7)
        model = Sequential([
            layers.Input(shape=(9, 11, 3)), layers.Resizing(7, 8), layers.Rescaling([0.5, 2.0, -1.0], 0.25),
            layers.Normalization(mean=[0.1, 0.2, 0.3], variance=[1.0, 2.0, 3.0]), layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(), layers.Dense(3, activation="softmax"),
        ])
        return model

    assert_compiled_steps_match_the_reference(make_model, x, y)


# ---------------------------------------------------------------- AOT: the kernels compile for sm_90

AOT_CASES = ["rescaling_conv", "normalization_dense", "resize_bilinear", "resize_nearest"]


def _aot_model(case):
    first = {
        "rescaling_conv": [layers.Input(shape=(32, 32, 3)), layers.Rescaling(1 / 255.0, -0.5)],
        "normalization_dense": [layers.Input(shape=(64,)), layers.Normalization(mean=0.5, variance=2.0)],
        "resize_bilinear": [layers.Input(shape=(37, 29, 3)), layers.Resizing(64, 48)],
        "resize_nearest": [layers.Input(shape=(37, 29, 3)), layers.Resizing(16, 20, interpolation="nearest")],
    }[case]
    last = layers.Dense(32, activation="relu") if case == "normalization_dense" else layers.Conv2D(16, 3, padding="same", activation="relu")
    return Sequential([*first, last])


def compile_cases(cases):
    """The AOT child's work: each case's kernels compiled for sm_90 (tests/aot_helpers.py)."""
    from aot_helpers import graph_kernel_records

    return [rec for case in cases for rec in graph_kernel_records(_aot_model(case).to_graph(), case=case)]


@pytest.mark.slow
def test_the_kernels_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=600)
    templates = [(r["case"], r["template"]) for r in records]
    assert templates == [("rescaling_conv", "conv2d"), ("normalization_dense", "matmul"), ("resize_bilinear", "resize"),
                         ("resize_bilinear", "conv2d"), ("resize_nearest", "resize"), ("resize_nearest", "conv2d")]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0, r
        assert r["tensor_cores"] or r["template"] == "resize", r  # the prologue keeps the conv on tensor cores


# ---------------------------------------------------------------- saving


@needs_keras
def test_an_adapted_normalization_saves_and_loads(tmp_path):
    norm = layers.Normalization(axis=-1)
    norm.adapt(_data())
    model = Sequential([layers.Input(shape=(6, 4)), layers.Rescaling([1.0, 2.0, 3.0, 4.0]), norm,
                        layers.Flatten(), layers.Dense(3)])
    path = tmp_path / "prep.keras"
    model.save(path)
    loaded = kcomp.models.load_model(path)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = _data(4, (5, 6, 4))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # Keras 3 reads the same file: its Normalization has the adapted statistics.
    theirs = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theirs(x)), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- the layer harness's cases


def _rescaling_ref(scale, offset):
    return lambda x, w: x * np.asarray(scale) + np.asarray(offset)


def _normalization_ref(x, w):
    return (x - w["mean"]) / np.maximum(np.sqrt(w["variance"]), 1e-7)


def _statistics(rng, name, shape):
    """Random mean and variance (positive), and a count as Keras keeps it: an int32."""
    if name == "count":
        return np.asarray(rng.integers(1, 100), dtype="int32")
    return default_weights(rng, name, shape)


def _case(cls, kwargs, input_shape, output_shape, weights, reference, id):
    return pytest.param(dict(
        weight_fn=_statistics,
        layer_cls=cls, init_kwargs=kwargs, input_shape=input_shape, expected_output_shape=output_shape,
        expected_num_weights=len(weights), expected_num_trainable=0, reference_fn=reference,
        expected_weight_shapes=weights, expected_non_trainable_names=tuple(weights), expected_num_params=sum(
            int(np.prod(s)) for s in weights.values()),
    ), id=id)


PREPROCESSING_CASES = [
    _case(layers.Rescaling, dict(scale=0.5, offset=1.0), (5, 7), (None, 7), {}, _rescaling_ref(0.5, 1.0), "rescaling"),
    _case(layers.Rescaling, dict(scale=[1.0, -2.0, 0.5]), (4, 5, 6, 3), (None, 5, 6, 3), {},
          _rescaling_ref([1.0, -2.0, 0.5], 0.0), "rescaling-per-channel"),
    _case(layers.Normalization, {}, (5, 7), (None, 7), {"mean": (7,), "variance": (7,), "count": ()},
          _normalization_ref, "normalization"),
    _case(layers.Resizing, dict(height=7, width=3), (2, 5, 6, 3), (None, 7, 3, 3), {},
          lambda x, w: resize_numpy(x, 7, 3, "bilinear"), "resizing"),
    _case(layers.Resizing, dict(height=3, width=8, interpolation="nearest"), (2, 5, 6, 3), (None, 3, 8, 3), {},
          lambda x, w: resize_numpy(x, 3, 8, "nearest"), "resizing-nearest"),
    _case(layers.CenterCrop, dict(height=3, width=4), (2, 5, 7, 3), (None, 3, 4, 3), {},
          lambda x, w: x[:, 1:4, 1:5], "center-crop"),
]


def test_the_k_language_has_the_preprocessing_layers():
    from kcomp import dsl

    (model,) = dsl.loads("""model prep {
  input(9, 11, 3)
  resizing(6, 7, interpolation=nearest)
  rescaling([0.5, 2.0, -1.0], offset=0.25)
  center_crop(4, 5)
  normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0])
}""", "prep.k").values()
    twin = Sequential([layers.Input(shape=(9, 11, 3)), layers.Resizing(6, 7, interpolation="nearest"),
                       layers.Rescaling([0.5, 2.0, -1.0], offset=0.25), layers.CenterCrop(4, 5),
                       layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0])])
    x = np.random.default_rng(5).normal(size=(2, 9, 11, 3)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), twin.predict(x, verbose=0))
    assert model.predict(x, verbose=0).shape == (2, 4, 5, 3)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
