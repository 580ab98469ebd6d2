"""The image, reshaping and merge layers of issue 15 part 3: ZeroPadding1D/2D, Cropping1D/2D,
UpSampling1D/2D (nearest and bilinear), RepeatVector, SpatialDropout2D, ELU, PReLU, Minimum, Dot and
Softmax's mask.

Each is checked three ways: the layer harness (config round-trip, weights, output against an
independent numpy / torch computation, eager call); side by side with Keras 3 (same weights: the
same predictions, and one SGD step gives the same loss and new weights, so the same weight
gradients, and through a 1x1 conv before the layer, the same input gradients), on the reference
executor and on the generated kernels under Triton's interpreter; and errors where Keras raises.
Images are odd-sized (5 x 7) and channels-last, Keras's default.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keras_oracle import keras, twins
from layer_harness import run_layer_test
from tolerances import tolerance

import kcomp
from kcomp import layers
from kcomp.errors import KcompError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RNG = np.random.default_rng(15)
H, W, C = 5, 7, 3
IMAGES = RNG.normal(size=(4, H, W, C)).astype("float32")
SEQS = RNG.normal(size=(4, 9, C)).astype("float32")
FORWARD = tolerance("float32", "accumulating")
STEP = tolerance("float32", "long")


# -- numpy / torch references for the harness ---------------------------------------------------
def _pad_ref(x, w, padding=1, **_):
    pads = layers.reshaping._pair_of_pairs("padding", padding, x.ndim - 2)
    return np.pad(x, ((0, 0), *pads, (0, 0)))


def _crop_ref(x, w, cropping=((0, 0), (0, 0)), **_):
    crops = layers.reshaping._pair_of_pairs("cropping", cropping, x.ndim - 2)
    index = tuple(slice(b, x.shape[i + 1] - a) for i, (b, a) in enumerate(crops))
    return x[(slice(None), *index)]


def _upsample_ref(x, w, size=2, interpolation="nearest", **_):
    sizes = (size,) if isinstance(size, int) and x.ndim == 3 else ((size, size) if isinstance(size, int) else size)
    if interpolation == "bilinear":  # torch's own resize, as Keras's torch backend calls it
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        out = F.interpolate(t, size=(x.shape[1] * sizes[0], x.shape[2] * sizes[1]), mode="bilinear", align_corners=False)
        return out.permute(0, 2, 3, 1).numpy()
    for axis, s in enumerate(sizes, start=1):
        x = np.repeat(x, s, axis=axis)
    return x


def _repeat_ref(x, w, n):
    return np.repeat(x[:, None, :], n, axis=1)


def _elu_ref(x, w, alpha=1.0):
    return np.where(x > 0, x, alpha * (np.exp(x) - 1))


def _prelu_ref(x, w, **_):
    return np.maximum(x, 0) - w["alpha"] * np.maximum(-x, 0)


def _identity_ref(x, w, **_):
    return x


def _minimum_ref(xs, w):
    return np.minimum.reduce(xs)


def _dot_ref(xs, w, axes, normalize=False):
    x, y = xs
    a0, a1 = (axes, axes) if isinstance(axes, int) else axes
    a0, a1 = a0 % x.ndim, a1 % y.ndim
    if normalize:
        x = x / np.maximum(np.sqrt((x * x).sum(axis=a0, keepdims=True)), 1e-7)
        y = y / np.maximum(np.sqrt((y * y).sum(axis=a1, keepdims=True)), 1e-7)
    if x.ndim == 2 and y.ndim == 2:
        return (x * y).sum(axis=1, keepdims=True)
    # Per sample, the contraction of x's axis a0 with y's axis a1: x's other axes, then y's.
    return np.stack([np.tensordot(xi, yi, axes=(a0 - 1, a1 - 1)) for xi, yi in zip(x, y)])


def case(cls, kwargs, input_shape, output_shape, reference, *, id, weights=None, params=0):
    weights = weights or {}
    return pytest.param(cls, kwargs, input_shape, output_shape, reference, weights, params, id=id)


CASES = [
    case(layers.ZeroPadding2D, {}, (3, H, W, C), (None, H + 2, W + 2, C), _pad_ref, id="zeropad2d-default"),
    case(layers.ZeroPadding2D, dict(padding=((1, 2), (0, 3))), (3, H, W, C), (None, H + 3, W + 3, C), _pad_ref,
         id="zeropad2d-pairs"),
    case(layers.ZeroPadding2D, dict(padding=(2, 1)), (3, H, W, C), (None, H + 4, W + 2, C), _pad_ref, id="zeropad2d-sym"),
    case(layers.ZeroPadding1D, dict(padding=(2, 1)), (3, 9, C), (None, 12, C), _pad_ref, id="zeropad1d"),
    case(layers.Cropping2D, dict(cropping=((1, 0), (2, 1))), (3, H, W, C), (None, H - 1, W - 3, C), _crop_ref,
         id="cropping2d"),
    case(layers.Cropping2D, dict(cropping=1), (3, H, W, C), (None, H - 2, W - 2, C), _crop_ref, id="cropping2d-int"),
    case(layers.Cropping1D, dict(cropping=(2, 3)), (3, 9, C), (None, 4, C), _crop_ref, id="cropping1d"),
    case(layers.UpSampling2D, {}, (3, H, W, C), (None, 2 * H, 2 * W, C), _upsample_ref, id="upsampling2d"),
    case(layers.UpSampling2D, dict(size=(3, 2)), (3, H, W, C), (None, 3 * H, 2 * W, C), _upsample_ref,
         id="upsampling2d-3-2"),
    case(layers.UpSampling2D, dict(interpolation="bilinear"), (3, H, W, C), (None, 2 * H, 2 * W, C), _upsample_ref,
         id="upsampling2d-bilinear"),
    case(layers.UpSampling2D, dict(size=(3, 4), interpolation="bilinear"), (3, H, 1, C), (None, 3 * H, 4, C),
         _upsample_ref, id="upsampling2d-bilinear-3-4-width1"),
    case(layers.UpSampling1D, dict(size=3), (3, 9, C), (None, 27, C), _upsample_ref, id="upsampling1d"),
    case(layers.RepeatVector, dict(n=4), (3, 6), (None, 4, 6), _repeat_ref, id="repeat-vector"),
    case(layers.SpatialDropout2D, dict(rate=0.4), (3, H, W, C), (None, H, W, C), _identity_ref, id="spatial-dropout2d"),
    case(layers.ELU, {}, (3, H, W, C), (None, H, W, C), _elu_ref, id="elu"),
    case(layers.ELU, dict(alpha=0.3), (3, 6), (None, 6), _elu_ref, id="elu-alpha"),
    case(layers.PReLU, {}, (3, H, W, C), (None, H, W, C), _prelu_ref, weights={"alpha": (H, W, C)}, params=H * W * C,
         id="prelu"),
    case(layers.PReLU, dict(shared_axes=[1, 2]), (3, H, W, C), (None, H, W, C), _prelu_ref,
         weights={"alpha": (1, 1, C)}, params=C, id="prelu-shared"),
    case(layers.Minimum, {}, [(3, 4, 6), (3, 4, 6), (3, 4, 6)], (None, 4, 6), _minimum_ref, id="minimum"),
    case(layers.Dot, dict(axes=1), [(3, 6), (3, 6)], (None, 1), _dot_ref, id="dot-vectors"),
    case(layers.Dot, dict(axes=1, normalize=True), [(3, 6), (3, 6)], (None, 1), _dot_ref, id="dot-cosine"),
    case(layers.Dot, dict(axes=2), [(3, 4, 6), (3, 5, 6)], (None, 4, 5), _dot_ref, id="dot-axes2"),
    case(layers.Dot, dict(axes=(1, 2), normalize=True), [(3, 6, 4), (3, 5, 6)], (None, 4, 5), _dot_ref,
         id="dot-axes-1-2-cosine"),
    case(layers.Dot, dict(axes=(2, 1)), [(3, 4, 6, 2), (3, 6, 5)], (None, 4, 2, 5), _dot_ref, id="dot-rank4-rank3"),
    case(layers.Dot, dict(axes=-1), [(3, 6), (3, 2, 4, 6)], (None, 2, 4), _dot_ref, id="dot-vector-rank4"),
]


@pytest.mark.parametrize("cls,kwargs,input_shape,output_shape,reference,weights,params", CASES)
def test_layer_harness(cls, kwargs, input_shape, output_shape, reference, weights, params):
    run_layer_test(
        cls, kwargs, input_shape, output_shape, len(weights), len(weights), lambda x, w: reference(x, w, **kwargs),
        expected_weight_shapes=weights, expected_num_params=params,
    )


# -- side by side with Keras 3 ------------------------------------------------------------------
IMAGE_LAYERS = {
    "zeropad2d": lambda L: L.ZeroPadding2D(((1, 2), (0, 3))),
    "cropping2d": lambda L: L.Cropping2D(((1, 0), (2, 1))),
    "upsampling2d-nearest": lambda L: L.UpSampling2D((2, 3)),
    "upsampling2d-bilinear": lambda L: L.UpSampling2D(2, interpolation="bilinear"),
    "upsampling2d-bilinear-3": lambda L: L.UpSampling2D((3, 2), interpolation="bilinear"),
    "spatial-dropout2d": lambda L: L.SpatialDropout2D(0.3),  # inference: the identity
    "elu": lambda L: L.ELU(0.7),
    "prelu": lambda L: L.PReLU(alpha_initializer="ones"),
    "prelu-shared": lambda L: L.PReLU(shared_axes=[1, 2]),
    "relu-all": lambda L: L.ReLU(max_value=1.2, negative_slope=0.1, threshold=0.2),
    "softmax-axis1": lambda L: L.Softmax(axis=1),
    "softmax-axes-1-2": lambda L: L.Softmax(axis=(1, 2)),
    "avgpool2d-same": lambda L: L.AveragePooling2D(2, padding="same"),
    "global-max2d": lambda L: L.GlobalMaxPooling2D(keepdims=True),
    "permute": lambda L: L.Permute((2, 1, 3)),
}
SEQUENCE_LAYERS = {
    "zeropad1d": lambda L: L.ZeroPadding1D((2, 1)),
    "cropping1d": lambda L: L.Cropping1D((1, 3)),
    "upsampling1d": lambda L: L.UpSampling1D(3),
}


def _one_layer(make, x):
    """Input -> 1x1 Conv (weights before the layer: their gradient is the layer's input gradient)
    -> the layer -> Flatten -> Dense."""
    conv = "Conv2D" if x.ndim == 4 else "Conv1D"

    def build(lib):
        L = lib.layers
        return lib.Sequential([lib.Input(x.shape[1:]), getattr(L, conv)(2, 1), make(L), L.Flatten(), L.Dense(2)])

    return build


def _randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([(0.5 * rng.normal(size=w.shape)).astype("float32") for w in model.get_weights()])
    return model


def _step_matches_keras(build, x, y, backend, train=True):
    ours, theirs = twins(build)
    theirs.set_weights(_randomized(ours).get_weights())
    assert ours.output_shape == theirs.output_shape
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **FORWARD)
    if not train:  # a random layer: training draws differ from Keras's
        return
    ours.compile(optimizer=kcomp.optimizers.SGD(0.1), loss="mse", backend=backend)
    theirs.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), **STEP)
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **STEP, err_msg=w.path)
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **STEP)


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("name", sorted(IMAGE_LAYERS) + sorted(SEQUENCE_LAYERS))
def test_layer_predicts_and_trains_as_keras(name, backend):
    make, x = (IMAGE_LAYERS[name], IMAGES) if name in IMAGE_LAYERS else (SEQUENCE_LAYERS[name], SEQS)
    y = RNG.normal(size=(len(x), 2)).astype("float32")
    _step_matches_keras(_one_layer(make, x), x, y, backend, train="dropout" not in name)


def _merge_model(make, shapes, dense_after=True):
    """Each input through its own Dense (their gradients are the merge's input gradients), merged."""

    def build(lib):
        inputs = [lib.Input(s) for s in shapes]
        merged = make(lib.layers)([lib.layers.Dense(4)(i) for i in inputs])
        if dense_after:
            merged = lib.layers.Dense(2)(lib.layers.Flatten()(merged))
        return lib.Model(inputs, merged)

    return build


MERGES = {
    "minimum": (lambda L: L.Minimum(), [(5,), (5,), (5,)]),
    "maximum": (lambda L: L.Maximum(), [(5,), (5,)]),
    "average": (lambda L: L.Average(), [(3, 5), (3, 5)]),
    "multiply": (lambda L: L.Multiply(), [(5,), (5,)]),
    "subtract": (lambda L: L.Subtract(), [(5,), (5,)]),
    "dot-vectors": (lambda L: L.Dot(axes=1), [(5,), (6,)]),
    "dot-cosine": (lambda L: L.Dot(axes=-1, normalize=True), [(5,), (6,)]),
    "dot-sequences": (lambda L: L.Dot(axes=2), [(3, 5), (6, 2)]),
    "dot-sequences-axes-1-1-cosine": (lambda L: L.Dot(axes=(1, 1), normalize=True), [(3, 5), (3, 2)]),
    "dot-vector-sequence": (lambda L: L.Dot(axes=(1, 2)), [(5,), (3, 6)]),
    "dot-rank4": (lambda L: L.Dot(axes=(1, 2), normalize=True), [(2, 3, 5), (3, 2, 4)]),
}


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("name", sorted(MERGES))
def test_merge_predicts_and_trains_as_keras(name, backend):
    make, shapes = MERGES[name]
    xs = [RNG.normal(size=(6, *s)).astype("float32") for s in shapes]
    _step_matches_keras(_merge_model(make, shapes), xs, RNG.normal(size=(6, 2)).astype("float32"), backend)


def test_softmax_mask_is_keras():
    """Masked logits drop out of their row; a row masked everywhere is zeros (Keras's where)."""
    x = RNG.normal(size=(3, 4, 6)).astype("float32")
    x[0, 1, 2] = np.inf  # under the mask: does not leak into its row
    mask = RNG.uniform(size=(3, 1, 6)) > 0.4
    mask[0, 0, 2] = False
    mask[1] = False
    ours = layers.Softmax()(x, mask=mask).numpy()
    theirs = keras.ops.convert_to_numpy(keras.layers.Softmax()(x, mask=mask))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert np.all(ours[1] == 0)
    with pytest.raises(KcompError, match="broadcast"):
        layers.Softmax()(x, mask=np.ones((3, 5), bool))


@pytest.mark.parametrize("backend", [None, "reference", "triton-interpret"])
def test_spatial_dropout2d_drops_whole_feature_maps(backend):
    rate, (n, h, w, c) = 0.4, (30, 3, 5, 20)
    layer = layers.SpatialDropout2D(rate, seed=4)
    x = RNG.uniform(1.0, 2.0, size=(n, h, w, c)).astype("float32")
    if backend is None:
        y = layer(x, training=True).numpy()
    else:
        model = kcomp.Sequential([kcomp.Input((h, w, c)), layer])
        model.compile(optimizer="sgd", loss="mse", backend=backend)
        y = np.asarray(model(x, training=True))
    kept = y != 0
    np.testing.assert_array_equal(kept, np.broadcast_to(kept[:, :1, :1], kept.shape))  # the same at every pixel
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    assert 0.4 < kept[:, 0, 0].mean() < 0.8
    np.testing.assert_array_equal(layer(x).numpy(), x)


BAD = {
    "zeropad-negative": lambda: layers.ZeroPadding2D(-1),
    "zeropad-three": lambda: layers.ZeroPadding2D((1, 2, 3)),
    "cropping-word": lambda: layers.Cropping1D("x"),
    "upsampling-bicubic": lambda: layers.UpSampling2D(interpolation="bicubic"),
    "upsampling-zero": lambda: layers.UpSampling2D(0),
    "channels-first": lambda: layers.ZeroPadding2D(data_format="channels_first"),
    "repeat-zero": lambda: layers.RepeatVector(0),
    "dot-three-axes": lambda: layers.Dot((1, 2, 3)),
    "prelu-constraint": lambda: layers.PReLU(alpha_constraint="non_neg"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_arguments_raise(name):
    with pytest.raises(KcompError, match="Received"):
        BAD[name]()


@pytest.mark.parametrize("make,shape", [
    (lambda: layers.Cropping2D(((3, 2), (0, 0))), (H, W, C)),  # crops all 5 rows, as Keras refuses
    (lambda: layers.ZeroPadding2D(), (9, C)),
    (lambda: layers.RepeatVector(2), (4, C)),
], ids=["crop-everything", "pad-a-sequence-2d", "repeat-a-sequence"])
def test_bad_shapes_raise(make, shape):
    with pytest.raises(KcompError):
        make()(kcomp.Input(shape))


def test_dot_bad_inputs_raise():
    a, b = kcomp.Input((5,)), kcomp.Input((6,))
    with pytest.raises(KcompError, match="incompatible"):
        layers.Dot(1)([a, b])
    with pytest.raises(KcompError, match="axes"):
        layers.Dot(0)([a, a])


# -- on the triton backend ----------------------------------------------------------------------
def unet_block(lib):
    """ZeroPadding2D(1) + a 3x3 'valid' conv (Keras's 'same'), a bilinear UpSampling2D, a crop back."""
    L = lib.layers
    return lib.Sequential([
        lib.Input((H, W, C)), L.ZeroPadding2D(1), L.Conv2D(4, 3, activation="relu"),
        L.UpSampling2D(2, interpolation="bilinear"), L.Cropping2D(((1, 2), (3, 0))), L.Flatten(), L.Dense(2),
    ])


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
def test_unet_block_trains_as_keras(backend):
    _step_matches_keras(unet_block, IMAGES, RNG.normal(size=(len(IMAGES), 2)).astype("float32"), backend)


def _plain_ops(graph):
    """The ops of a fused graph that no kernel computes (they run on torch), in order."""
    return [n.op for n in graph.nodes if n.op != "kernel"]


def test_zero_padding_before_a_conv_is_its_same_padding():
    """The pad goes: the conv kernel pads 'same' in its loads, in inference and in a training step
    (the filter gradient reads x too); padding other than 'same' keeps it, as a pad_slice kernel."""
    from kcomp.compiler import train_step_graph
    from kcomp.passes import run_pipeline
    from kernel_helpers import assert_compiled_matches_reference

    model = kcomp.Sequential([kcomp.Input((H, W, C)), layers.ZeroPadding2D(((1, 2), (1, 2))), layers.Conv2D(4, 4)])
    _randomized(model)
    fused, _ = run_pipeline(model.to_graph())
    assert _plain_ops(fused) == []
    compared = assert_compiled_matches_reference(model, [torch.randn(3, H, W, C)], kind="accumulating")
    assert "pad" not in _plain_ops(compared.fused)
    model.compile(optimizer="sgd", loss="mse", backend="triton-interpret")
    step, _ = run_pipeline(train_step_graph(model))
    assert "pad" not in _plain_ops(step)
    uneven = kcomp.Sequential([kcomp.Input((H, W, C)), layers.ZeroPadding2D(((2, 0), (1, 1))), layers.Conv2D(4, 3)])
    fused, _ = run_pipeline(uneven.to_graph())
    assert _plain_ops(fused) == [] and [k.attrs["template"] for k in fused.nodes] == ["pad_slice", "conv2d"]  # rows and columns


def test_image_layers_on_generated_kernels_match_the_reference():
    """Every image layer compiled (triton-interpret) against the reference executor: the upsamplings
    are resize kernels, pads and crops pad_slice kernels, ELU and PReLU pointwise kernels; only
    views (and Permute's transpose) are left outside kernels."""
    from kernel_helpers import assert_compiled_matches_reference

    x = torch.randn(3, H, W, C)
    moves = {"reshape", "transpose"}
    # A softmax over an axis other than the last has no row kernel (kernels/rows.py); over two axes,
    # its (N, 1, 1, C) max and sum are operands no pointwise kernel loads: both run on torch.
    on_torch = {"softmax-axis1": {"softmax"}, "softmax-axes-1-2": {"sub", "div"}}
    for name, make in IMAGE_LAYERS.items():
        model = _randomized(_one_layer(make, IMAGES)(kcomp))
        compared = assert_compiled_matches_reference(model, [x], kind="accumulating")
        assert set(_plain_ops(compared.fused)) <= moves | on_torch.get(name, set()), name


def test_dsl_names_the_image_layers():
    """The .k language's names: Keras's class names in snake_case (prelu for PReLU)."""
    from kcomp import dsl

    text = """
graph g {
  x = input(5, 7, 3)
  p = zero_padding2d(x, padding=1)
  c = conv2d(p, 4, kernel=3)
  u = up_sampling2d(c, size=2, interpolation=bilinear)
  k = cropping2d(u, cropping=1)
  a = prelu(k, shared_axes=[1, 2])
  o = spatial_dropout2d(a, 0.3)
  e = elu(o, alpha=0.5)
  v = global_max_pooling2d(e)
  r = repeat_vector(v, 3)
  q = cropping1d(r, cropping=1)
  z = zero_padding1d(q, padding=2)
  s = up_sampling1d(z, size=2)
  w = dense(v, 4)
  d = dot(v, w, axes=1, normalize=true)
  m = minimum(v, w)
  output s, d, m
}
"""
    model = dsl.loads(text, "image.k")["g"]
    assert model.output_shape == [(None, 10, 4), (None, 1), (None, 4)]
    assert model.get_layer("p_re_lu").shared_axes == [1, 2]  # named as Keras names it
    assert model.get_layer("up_sampling2d").interpolation == "bilinear" and model.get_layer("elu").alpha == 0.5


def test_a_keras_file_with_the_image_layers_loads(tmp_path):
    """A .keras archive Keras wrote with these layers loads into kcomp and predicts as Keras; kcomp's
    own archive of it loads into Keras."""
    L = keras.layers
    inp = keras.Input((H, W, C))
    y = L.Conv2D(4, 3)(L.ZeroPadding2D(((1, 2), (0, 1)))(inp))
    y = L.PReLU(alpha_initializer="random_normal", shared_axes=[1])(L.UpSampling2D((2, 1), interpolation="bilinear")(y))
    y = L.ELU(0.4)(L.SpatialDropout2D(0.2)(L.Cropping2D(((1, 1), (2, 0)))(y)))
    v = L.GlobalMaxPooling2D()(y)
    a, b = L.Dense(5)(v), L.Dense(5)(v)
    seq = L.Cropping1D((1, 0))(L.ZeroPadding1D(1)(L.UpSampling1D(2)(L.RepeatVector(3)(L.Minimum()([a, b])))))
    theirs = keras.Model(inp, [L.Dot(axes=1, normalize=True)([a, b]), seq])
    theirs.save(tmp_path / "image.keras")
    ours = kcomp.models.load_model(tmp_path / "image.keras")
    for got, want in zip(ours.predict(IMAGES, verbose=0), theirs.predict(IMAGES, verbose=0), strict=True):
        np.testing.assert_allclose(got, want, **FORWARD)
    ours.save(tmp_path / "ours.keras")
    again = keras.saving.load_model(tmp_path / "ours.keras")
    for got, want in zip(again.predict(IMAGES, verbose=0), theirs.predict(IMAGES, verbose=0), strict=True):
        np.testing.assert_allclose(got, want, **FORWARD)
