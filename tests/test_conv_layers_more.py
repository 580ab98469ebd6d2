"""Conv2DTranspose, DepthwiseConv2D and SeparableConv2D: the layer harness, Keras 3 side by side,
and the generated kernels in a training step.

(1) tests/layer_harness.py with independent float64 references: the transposed convolution as a
numpy scatter (every input pixel adds kernel * value into its window of the output) cropped as
Keras's own helper says; depthwise and separable as torch's grouped F.conv2d (tests/test_layers.py's
conv2d_ref). (2) Keras 3 (torch backend) with the same weights: predictions over geometries
(strides, 'valid'/'same', output_padding, dilation, depth multipliers), configs, and one SGD step
giving the same loss and new weights (the same gradients) on the reference executor and on the
generated kernels under Triton's interpreter. (3) Which kernels a training step runs.
"""

import itertools
import json
import math

import numpy as np
import pytest

from keras_oracle import keras, twins
from layer_harness import run_layer_test
from test_keras_sequence_layers import _sgd_step_matches_keras, keras_archive_both_ways, randomized
from test_layers import _act, _pair, conv2d_ref
from tolerances import tolerance

import kcomp
from kcomp import layers
from kcomp.errors import KcompError
from kcomp.layers.conv_variants import transposed_extent
from kcomp.saving.serialization import layer_to_keras

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras converting its torch variables

IMAGE = (5, 7, 6, 3)  # batch 5, 7 x 6 pixels, 3 channels
RNG = np.random.default_rng(15)
X = RNG.normal(size=(4, *IMAGE[1:])).astype("float32")
FORWARD = tolerance("float32", "accumulating")


# -- (1) the harness ------------------------------------------------------------------------------


def transpose_ref(x, w, filters, kernel_size, strides=1, padding="valid", output_padding=None, dilation_rate=1,
                  activation=None, use_bias=True, **_):
    """Scatter every input pixel's contribution into the full output, then Keras's crop (its backend
    helper, keras/src/backend/common/backend_utils.py), zero-extended where the crop is negative."""
    from keras.src.backend.common.backend_utils import compute_conv_transpose_output_crops_for_torch

    (kh, kw), (sh, sw), (dh, dw) = _pair(kernel_size), _pair(strides), _pair(dilation_rate)
    kernel = w["kernel"]  # (kh, kw, filters, in)
    n, h, wd, _ = x.shape
    full = np.zeros((n, (h - 1) * sh + dh * (kh - 1) + 1, (wd - 1) * sw + dw * (kw - 1) + 1, filters))
    for i, j, a, b in itertools.product(range(h), range(wd), range(kh), range(kw)):
        full[:, i * sh + a * dh, j * sw + b * dw] += x[:, i, j] @ kernel[a, b].T
    crops = compute_conv_transpose_output_crops_for_torch(x.shape, kernel.shape, (sh, sw), padding, output_padding,
                                                          (dh, dw))
    for axis, (before, after) in zip((1, 2), crops):
        widths = [(0, 0)] * 4
        widths[axis] = (max(-before, 0), max(-after, 0))
        full = np.pad(full, widths)
        full = np.take(full, range(max(before, 0), full.shape[axis] - max(after, 0)), axis=axis)
    y = full + w["bias"] if use_bias else full
    return _act(activation)(y)


def depthwise_ref(x, w, kernel_size, depth_multiplier=1, activation=None, use_bias=True, **kwargs):
    kh, kw = _pair(kernel_size)
    c = x.shape[-1]
    weights = {"kernel": w["kernel"].reshape(kh, kw, 1, c * depth_multiplier)}
    if use_bias:
        weights["bias"] = w["bias"]
    return conv2d_ref(x, weights, c * depth_multiplier, kernel_size, groups=c, activation=activation,
                      use_bias=use_bias, **kwargs)


def separable_ref(x, w, filters, kernel_size, depth_multiplier=1, activation=None, use_bias=True, **kwargs):
    deep = depthwise_ref(x, {"kernel": w["depthwise_kernel"]}, kernel_size, depth_multiplier, use_bias=False, **kwargs)
    y = deep @ w["pointwise_kernel"][0, 0]
    return _act(activation)(y + w["bias"] if use_bias else y)


def case(cls, kwargs, out, weights, reference, id, shape=IMAGE):
    return pytest.param(dict(
        layer_cls=cls, init_kwargs=kwargs, input_shape=shape, expected_output_shape=out,
        expected_num_weights=len(weights), expected_num_trainable=len(weights),
        reference_fn=lambda x, w: reference(x, w, **kwargs), expected_weight_shapes=weights,
        expected_num_params=sum(math.prod(s) for s in weights.values()),
    ), id=id)


def _transpose(kwargs, out, id):
    kh, kw = _pair(kwargs["kernel_size"])
    weights = {"kernel": (kh, kw, kwargs["filters"], 3)}
    if kwargs.get("use_bias", True):
        weights["bias"] = (kwargs["filters"],)
    return case(layers.Conv2DTranspose, kwargs, out, weights, transpose_ref, id)


def _depthwise(kwargs, out, id):
    kh, kw = _pair(kwargs["kernel_size"])
    dm = kwargs.get("depth_multiplier", 1)
    weights = {"kernel": (kh, kw, 3, dm)}
    if kwargs.get("use_bias", True):
        weights["bias"] = (3 * dm,)
    return case(layers.DepthwiseConv2D, kwargs, out, weights, depthwise_ref, id)


def _separable(kwargs, out, id):
    kh, kw = _pair(kwargs["kernel_size"])
    dm = kwargs.get("depth_multiplier", 1)
    weights = {"depthwise_kernel": (kh, kw, 3, dm), "pointwise_kernel": (1, 1, 3 * dm, kwargs["filters"])}
    if kwargs.get("use_bias", True):
        weights["bias"] = (kwargs["filters"],)
    return case(layers.SeparableConv2D, kwargs, out, weights, separable_ref, id)


HARNESS = [
    _transpose(dict(filters=4, kernel_size=3), (None, 9, 8, 4), "transpose-valid"),
    _transpose(dict(filters=4, kernel_size=3, strides=2, padding="same"), (None, 14, 12, 4), "transpose-same-s2"),
    _transpose(dict(filters=2, kernel_size=(2, 3), strides=(2, 3), activation="relu"), (None, 14, 18, 2),
               "transpose-valid-s23"),
    _transpose(dict(filters=3, kernel_size=3, strides=2, output_padding=1), (None, 16, 14, 3), "transpose-output-padding"),
    _transpose(dict(filters=3, kernel_size=3, strides=3, padding="same", output_padding=(1, 2), use_bias=False),
               (None, 20, 18, 3), "transpose-same-output-padding"),
    _transpose(dict(filters=2, kernel_size=3, dilation_rate=2, padding="same"), (None, 7, 6, 2), "transpose-dilated"),
    _transpose(dict(filters=2, kernel_size=1, strides=3), (None, 21, 18, 2), "transpose-k1-s3"),
    _depthwise(dict(kernel_size=3), (None, 5, 4, 3), "depthwise-valid"),
    _depthwise(dict(kernel_size=3, strides=2, padding="same", depth_multiplier=2), (None, 4, 3, 6), "depthwise-same-s2-dm2"),
    _depthwise(dict(kernel_size=(2, 3), dilation_rate=2, activation="relu", use_bias=False), (None, 5, 2, 3),
               "depthwise-dilated"),
    _separable(dict(filters=4, kernel_size=3), (None, 5, 4, 4), "separable-valid"),
    _separable(dict(filters=5, kernel_size=3, strides=2, padding="same", depth_multiplier=2, activation="tanh"),
               (None, 4, 3, 5), "separable-same-s2-dm2"),
    _separable(dict(filters=2, kernel_size=2, dilation_rate=(2, 1), use_bias=False), (None, 5, 5, 2),
               "separable-dilated-no-bias"),
]


@pytest.mark.parametrize("spec", HARNESS)
def test_layer(spec):
    run_layer_test(**spec)


# -- (2) Keras 3 side by side --------------------------------------------------------------------


def one_layer(make):
    return lambda lib: lib.Sequential([lib.Input(IMAGE[1:]), make(lib.layers)])


TRANSPOSE_GEOMETRIES = [  # (kernel, strides, padding, output_padding, dilation)
    (k, s, p, op, d)
    for k, s, p, op, d in itertools.product([1, 2, 3, (2, 3)], [1, 2, 3], ["valid", "same"], [None, 0, 1], [1, 2])
    if not (s > 1 and d > 1) and (op is None or op < s)
]


@pytest.mark.parametrize("geometry", TRANSPOSE_GEOMETRIES, ids=str)
def test_conv2d_transpose_predicts_as_keras(geometry):
    k, s, p, op, d = geometry
    make = lambda L: L.Conv2DTranspose(4, k, strides=s, padding=p, output_padding=op, dilation_rate=d)  # noqa: E731
    ours, theirs = twins(one_layer(make))
    theirs.set_weights(randomized(ours).get_weights())
    assert ours.output_shape == theirs.output_shape
    np.testing.assert_allclose(ours.predict(X, verbose=0), theirs.predict(X, verbose=0), **FORWARD)


DEPTHWISE_GEOMETRIES = list(itertools.product([1, 3, (2, 3)], [1, 2], ["valid", "same"], [1, 2], [1, 2]))


@pytest.mark.parametrize("geometry", DEPTHWISE_GEOMETRIES, ids=str)
@pytest.mark.parametrize("cls", ["DepthwiseConv2D", "SeparableConv2D"])
def test_depthwise_and_separable_predict_as_keras(cls, geometry):
    k, s, p, dm, d = geometry
    if cls == "DepthwiseConv2D":
        make = lambda L: L.DepthwiseConv2D(k, strides=s, padding=p, depth_multiplier=dm, dilation_rate=d)  # noqa: E731
    else:
        make = lambda L: L.SeparableConv2D(5, k, strides=s, padding=p, depth_multiplier=dm, dilation_rate=d)  # noqa: E731
    ours, theirs = twins(one_layer(make))
    theirs.set_weights(randomized(ours).get_weights())
    assert ours.output_shape == theirs.output_shape
    np.testing.assert_allclose(ours.predict(X, verbose=0), theirs.predict(X, verbose=0), **FORWARD)


LAYERS = {
    "transpose": lambda L: L.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1, activation="relu"),
    "depthwise": lambda L: L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="tanh"),
    "separable": lambda L: L.SeparableConv2D(5, (2, 3), strides=2, depth_multiplier=2, activation="relu",
                                             depthwise_initializer="he_normal", pointwise_regularizer="l2"),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_configs_and_weights_are_keras(name):
    ours, theirs = twins(one_layer(LAYERS[name]))
    ours_layer, theirs_layer = ours.layers[0], theirs.layers[0]
    # As the files hold them (JSON: tuples become lists).
    ours_config = json.loads(json.dumps(layer_to_keras(ours_layer)["config"]))
    theirs_config = json.loads(json.dumps(keras.saving.serialize_keras_object(theirs_layer)["config"]))
    assert sorted(ours_config) == sorted(theirs_config)
    for key in ours_config:
        if key.endswith("initializer"):  # Keras 3.15's glorot configs add fan axes kcomp does not write
            assert ours_config[key]["class_name"] == theirs_config[key]["class_name"], key
        elif key not in ("name", "dtype"):
            assert ours_config[key] == theirs_config[key], key
    assert [(w.name, tuple(w.shape)) for w in ours_layer.weights] == [(w.name, tuple(w.shape)) for w in theirs_layer.weights]
    clone = type(ours_layer).from_config(ours_layer.get_config())
    assert clone.get_config() == ours_layer.get_config()


def image_stack(lib):
    """Each new layer with weights, trained end to end: separable, depthwise, an upsampling
    transposed conv (strided, output_padding) and a pooled Dense head."""
    L = lib.layers
    return lib.Sequential([
        lib.Input(IMAGE[1:]),
        L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, activation="relu"),
        L.DepthwiseConv2D(3, strides=2, depth_multiplier=2, activation="tanh"),
        L.Conv2DTranspose(3, 3, strides=2, padding="same", output_padding=1, activation="relu"),
        L.Conv2DTranspose(2, (2, 3), padding="valid"),
        L.GlobalAveragePooling2D(),
        L.Dense(2),
    ])


def cropped_transposes(lib):
    """Transposed convs that Keras crops off the full output ('same', output_padding=0, even
    windows: not a conv's 'same' input gradient), so kcomp slices the full one."""
    L = lib.layers
    return lib.Sequential([
        lib.Input(IMAGE[1:]),
        L.Conv2DTranspose(3, 4, strides=2, padding="same", output_padding=0, activation="relu"),
        L.Conv2DTranspose(2, (2, 3), padding="same", output_padding=0),
        L.GlobalAveragePooling2D(),
        L.Dense(2),
    ])


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("build", [image_stack, cropped_transposes], ids=lambda f: f.__name__)
def test_trains_as_keras(build, backend):
    """One SGD step from the same weights: the same loss and new weights (so the same gradients of
    every kernel and bias), then the same predictions."""
    _sgd_step_matches_keras(build, X, RNG.normal(size=(len(X), 2)).astype("float32"), backend)


def test_the_cropped_transposes_slice_the_full_output():
    from kcomp.compiler import train_step_graph

    model = cropped_transposes(kcomp)
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    ops = [n.op for n in train_step_graph(model).nodes]
    assert ops.count("slice") == 4 and ops.count("conv2d_backprop_input") == 2, ops  # both axes of each


def test_keras_archive_round_trip(tmp_path):
    keras_archive_both_ways(image_stack, X, tmp_path)


# -- (3) the kernels of a training step -----------------------------------------------------------


def test_training_step_runs_the_new_layers_on_templates():
    """Depthwise forward + bias + activation in one kernel, both depthwise gradients and the
    transposed convs (conv2d_grad_input + bias + activation forward, conv2d + conv2d_grad_filter
    backward) on templates; the pointwise 1x1 conv is a matmul. Nothing conv-like is left to torch."""
    from kcomp.compiler import train_step_graph
    from kcomp.passes import run_pipeline
    from kcomp.passes.pipeline import STEP_PIPELINE

    model = image_stack(kcomp)
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    kernels = [(k.attrs["template"], tuple(n.op for n in k.attrs["body"].nodes if n.op != "constant"))
               for k in fused.nodes if k.op == "kernel"]
    templates = [t for t, _ in kernels]
    assert ("conv2d_depthwise", ("conv2d", "bias_add", "tanh")) in kernels, kernels
    assert templates.count("conv2d_depthwise") == 2
    assert templates.count("conv2d_depthwise_grad_filter") == 2
    assert templates.count("conv2d_depthwise_grad_input") == 1  # the first layer's input needs none
    # The transposed convs' forwards, the first with its bias and relu as the epilogue.
    assert ("conv2d_grad_input", ("conv2d_backprop_input", "bias_add", "relu")) in kernels, kernels
    assert templates.count("conv2d_grad_input") >= 2
    assert not [n.op for n in fused.nodes if n.op.startswith("conv2d")], [n.op for n in fused.nodes]


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make, match", [
    (lambda: layers.Conv2DTranspose(4, 3, strides=2, output_padding=2), "output_padding"),
    (lambda: layers.Conv2DTranspose(4, 3, strides=2, dilation_rate=2), "dilation_rate"),
    (lambda: layers.Conv2DTranspose(4, 3, output_padding=-1), "output_padding"),
    (lambda: layers.DepthwiseConv2D(3, depth_multiplier=0), "depth_multiplier"),
    (lambda: layers.SeparableConv2D(4, 3, padding="full"), "padding"),
    (lambda: layers.DepthwiseConv2D(3, data_format="channels_first"), "data_format"),
])
def test_bad_arguments_raise_kcomp_errors(make, match):
    with pytest.raises(KcompError, match=match):
        make()


def test_unknown_image_size_is_refused():
    with pytest.raises(KcompError, match="needs known height"):
        layers.Conv2DTranspose(2, 3)(kcomp.Input((None, None, 3)))


def test_transposed_extent_is_keras_output_length():
    """The output sizes Keras's compute_output_shape gives, over the geometries above."""
    for k, s, p, op, d in TRANSPOSE_GEOMETRIES:
        k = _pair(k)[0]
        layer = keras.layers.Conv2DTranspose(1, k, strides=s, padding=p, output_padding=op, dilation_rate=d)
        want = layer.compute_output_shape((1, 7, 7, 1))[1]
        assert transposed_extent(7, k, s, d, p, op)[1] == want, (k, s, p, op, d)


# -- the VJP of conv2d_backprop_input (Conv2DTranspose's forward) --------------------------------

BACKPROP_INPUT_CASES = [  # (input size (H, W) of the conv, kernel (kh, kw, in/groups, filters), attrs)
    ((9, 11), (3, 3, 3, 5), {}),
    ((9, 11), (3, 3, 3, 5), {"strides": (2, 2), "padding": "same"}),
    ((9, 11), (2, 4, 3, 5), {"strides": (2, 3)}),  # rows and columns no window reaches
    ((9, 11), (3, 2, 3, 4), {"dilation": (2, 1), "padding": "same"}),
    ((9, 11), (3, 3, 1, 6), {"groups": 3, "strides": (2, 1), "padding": "same"}),  # depthwise, multiplier 2
    ((8, 7), (2, 2, 2, 4), {"groups": 2, "strides": (2, 2)}),
]


@pytest.mark.parametrize("size, kernel, attrs", BACKPROP_INPUT_CASES, ids=[f"{k}-{a}" for _, k, a in BACKPROP_INPUT_CASES])
def test_conv2d_backprop_input_vjp_is_autograd_in_float64(size, kernel, attrs):
    from kcomp.ir.ops.conv import output_size
    from vjp_harness import check_vjp

    full = {"strides": (1, 1), "padding": "valid", "dilation": (1, 1), **attrs}
    oh, ow = (output_size(n, k, s, d, full["padding"]) for n, k, s, d in zip(size, kernel[:2], full["strides"], full["dilation"]))
    rng = np.random.default_rng(len(attrs))
    dy, w = rng.normal(size=(2, oh, ow, kernel[3])), 0.5 * rng.normal(size=kernel)
    check_vjp("conv2d_backprop_input", [dy, w], {"input_size": size, **attrs})


def test_the_layers_in_the_k_language():
    """The .k names are Keras's class names in snake_case; model_to_k writes them back."""
    from kcomp.dsl import loads
    from kcomp.saving.k_text import model_to_k

    (model,) = loads("""
model upsample {
  input(7, 6, 3)
  separable_conv2d(4, kernel=3, padding=same, depth_multiplier=2, activation=relu)
  depthwise_conv2d(3, strides=2, activation=tanh)
  conv2d_transpose(2, 3, strides=2, padding=same, output_padding=1)
}
""").values()
    assert [type(l).__name__ for l in model.layers] == ["SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose"]
    assert model.output_shape == (None, 6, 4, 2)
    text = model_to_k(model)
    (again,) = loads(text).values()
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(again.predict(X, verbose=0), model.predict(X, verbose=0))
