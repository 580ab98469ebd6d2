"""Keras fidelity, side by side with Keras 3 (torch backend): building Sequential models, models
as layers (transfer learning), layer.input / layer.output, custom layers, layer and weight order.

Each test builds the same model with `keras` and with `kcomp` (one builder, the module passed
in), copies Keras's weights into kcomp with get_weights / set_weights, and compares outputs and,
where it matters, a training step's loss and weights.
"""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import KcompError

keras = pytest.importorskip("keras")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras converting its torch variables

RNG = np.random.default_rng(7)
X4 = RNG.normal(size=(10, 4)).astype("float32")
Y2 = RNG.normal(size=(10, 2)).astype("float32")


@pytest.fixture(autouse=True)
def keras_session():
    keras.utils.clear_session()
    keras.utils.set_random_seed(3)
    yield


def copy_weights(src, dst):
    """Keras -> kcomp through get_weights / set_weights, which must agree on the order."""
    weights = src.get_weights()
    assert [w.shape for w in weights] == [w.shape for w in dst.get_weights()]
    dst.set_weights(weights)


def same_predictions(km, cm, x, rtol=1e-5, atol=1e-6):
    want = km.predict(x, verbose=0)
    got = cm.predict(x, verbose=0)
    for w, g in zip(want if isinstance(want, list) else [want], got if isinstance(got, list) else [got]):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def summary_text(model, **kwargs) -> str:
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), **kwargs)
    return "\n".join(lines)


def param_totals(text: str) -> list[str]:
    """The "Total / Trainable / Non-trainable params: N" numbers of a summary (Keras's or kcomp's)."""
    out = []
    for key in ("Total params:", "Trainable params:", "Non-trainable params:"):
        rest = text[text.index(key) + len(key):].split()
        out.append(rest[0])
    return out


# -- 3. building ----------------------------------------------------------------------------
def stack(K):
    model = K.Sequential(name="stack")
    model.add(K.layers.Dense(5, activation="tanh", name="h"))
    model.add(K.layers.Dense(2, name="out"))
    return model


def test_compile_before_build_then_fit_builds_on_the_first_data_as_keras():
    km, cm = stack(keras), stack(kcomp)
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse", metrics=["mae"])
        assert not m.built
    assert isinstance(cm.optimizer, kcomp.optimizers.SGD)  # resolved at compile, as Keras does
    km.predict(X4, verbose=0)
    cm.predict(X4, verbose=0)  # builds (None, 4)
    assert cm.built and cm.input_shape == (None, 4) and cm.output_shape == (None, 2)
    copy_weights(km, cm)
    kh = km.fit(X4, Y2, epochs=2, batch_size=10, shuffle=False, verbose=0).history
    ch = cm.fit(X4, Y2, epochs=2, batch_size=10, shuffle=False, verbose=0).history
    assert sorted(ch) == sorted(kh)
    for key in kh:
        np.testing.assert_allclose(ch[key], kh[key], rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first", ["fit", "evaluate", "train_on_batch", "test_on_batch", "predict", "call"])
def test_any_first_call_with_data_builds_a_compiled_model(first):
    km, cm = stack(keras), stack(kcomp)
    for m in (km, cm):
        m.compile("sgd", "mse")
        if first == "fit":
            m.fit(X4, Y2, verbose=0)
        elif first == "evaluate":
            m.evaluate(X4, Y2, verbose=0)
        elif first == "call":
            m(X4)
        elif first == "predict":
            m.predict(X4, verbose=0)
        else:
            getattr(m, first)(X4, Y2)
        assert m.built
    assert cm.output_shape == (None, 2) and len(cm.weights) == len(km.weights) == 4
    copy_weights(km, cm)
    np.testing.assert_allclose(cm.evaluate(X4, Y2, verbose=0), km.evaluate(X4, Y2, verbose=0), rtol=1e-5)


def test_unknown_loss_raises_when_the_model_builds():
    cm = stack(kcomp)
    cm.compile("sgd", "msee")  # Keras, too, accepts it at compile and raises at fit
    with pytest.raises(KcompError, match="msee"):
        cm.fit(X4, Y2, verbose=0)
    with pytest.raises(KcompError, match="sgdd"):
        stack(kcomp).compile("sgdd", "mse")  # the optimizer is resolved at compile, as in Keras


def test_build_with_input_shape():
    km, cm = stack(keras), stack(kcomp)
    km.build((None, 4))
    cm.build((None, 4))
    assert cm.built and cm.input_shape == km.input_shape and cm.output_shape == km.output_shape
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    with pytest.raises(ValueError):
        km.build((None, 5))
    with pytest.raises(KcompError, match=r"\(None, 4\).*\(None, 5\)"):
        cm.build((None, 5))
    with pytest.raises(ValueError):
        keras.Sequential().build((None, 4))
    with pytest.raises(KcompError, match="no layers"):
        kcomp.Sequential().build((None, 4))


@pytest.mark.parametrize("form", ["list", "add"])
def test_input_inside_a_sequential(form):
    def make(K):
        if form == "list":
            return K.Sequential([K.Input((4,)), K.layers.Dense(2, name="d")])
        m = K.Sequential()
        m.add(K.Input((4,)))
        assert not m.built  # an Input alone does not build it, in Keras either
        m.add(K.layers.Dense(2, name="d"))
        return m

    km, cm = make(keras), make(kcomp)
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["d"]
    assert cm.input_shape == km.input_shape == (None, 4)
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    with pytest.raises(ValueError, match="already been configured"):
        km.add(keras.Input((5,)))
    with pytest.raises(KcompError, match="already been configured"):
        cm.add(kcomp.Input((5,)))


def test_a_sequential_holding_only_an_input_is_not_built():
    km, cm = keras.Sequential([keras.Input((4,))]), kcomp.Sequential([kcomp.Input((4,))])
    assert km.built is cm.built is False and cm.layers == km.layers == []


def test_add_after_build_and_pop():
    def make(K):
        m = K.Sequential([K.Input((4,)), K.layers.Dense(3, name="a"), K.layers.Dense(2, name="b")])
        m.add(K.layers.Dense(5, name="c"))
        return m

    km, cm = make(keras), make(kcomp)
    assert cm.output_shape == km.output_shape == (None, 5) and len(cm.weights) == len(km.weights) == 6
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    assert km.pop().name == cm.pop().name == "c"
    assert cm.output_shape == km.output_shape == (None, 2) and len(cm.weights) == len(km.weights) == 4
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["a", "b"]
    same_predictions(km, cm, X4)
    cm.add(kcomp.layers.Dense(1, name="c2"))
    km.add(keras.layers.Dense(1, name="c2"))
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    for m in (km, cm):
        m.pop()
        m.pop()
        m.pop()
        assert not m.built and m.layers == []
    with pytest.raises(IndexError):
        km.pop()
    with pytest.raises(KcompError, match="no layers to pop"):
        cm.pop()


def test_pop_after_compile_retraces_the_training_step():
    cm = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(3), kcomp.layers.Dense(2)])
    cm.compile("sgd", "mse")
    cm.fit(X4, Y2, verbose=0)
    cm.pop()
    cm.add(kcomp.layers.Dense(1))
    cm.fit(X4, Y2[:, :1], verbose=0)  # the step of the 2-output model would not fit these targets
    assert cm.predict(X4, verbose=0).shape == (10, 1)


def test_duplicate_layer_names_in_a_sequential_raise_as_in_keras():
    with pytest.raises(ValueError, match="unique names"):
        keras.Sequential([keras.layers.Dense(2, name="q"), keras.layers.Dense(2, name="q")])
    with pytest.raises(KcompError, match="unique names"):
        kcomp.Sequential([kcomp.layers.Dense(2, name="q"), kcomp.layers.Dense(2, name="q")])


# -- 4. the model API -------------------------------------------------------------------------
def test_calling_a_model_on_data_with_training():
    def make(K):
        return K.Sequential([K.Input((400,)), K.layers.Dropout(0.5, seed=1), K.layers.Dense(3, name="d")])

    km, cm = make(keras), make(kcomp)
    copy_weights(km, cm)
    x = RNG.normal(size=(6, 400)).astype("float32")
    out = cm(x)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), km(x).detach().cpu().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cm(x, training=False).numpy(), out.numpy())
    drop = kcomp.Sequential([kcomp.Input((400,)), kcomp.layers.Dropout(0.5)])
    kept = drop(np.ones((4, 400), "float32"), training=True).numpy()
    assert 0.4 < (kept == 0).mean() < 0.6 and set(np.unique(kept)) == {0.0, 2.0}  # inverted dropout, as Keras
    np.testing.assert_array_equal(drop(np.ones((4, 400), "float32")).numpy(), 1.0)
    again = drop(np.ones((4, 400), "float32"), training=True).numpy()
    assert (again != kept).mean() > 0.3  # each call draws new masks (Monte Carlo dropout), as Keras's calls do


def test_calling_a_model_with_training_updates_batch_norm_statistics_as_keras():
    def make(K):
        return K.Sequential([K.Input((4,)), K.layers.Dense(3, name="d"), K.layers.BatchNormalization(name="bn")])

    km, cm = make(keras), make(kcomp)
    copy_weights(km, cm)
    x = X4 * 2.0 + 1.0
    for _ in range(2):
        np.testing.assert_allclose(cm(x, training=True).numpy(), km(x, training=True).detach().cpu().numpy(), rtol=1e-5, atol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # moving mean and variance moved alike
    assert not np.allclose(cm.get_weights()[4], 0.0)
    np.testing.assert_allclose(cm(x).numpy(), km(x).detach().cpu().numpy(), rtol=1e-5, atol=1e-5)


def base_and_head(K, base_kind):
    L = K.layers
    if base_kind == "sequential":
        base = K.Sequential([K.Input((4,)), L.Dense(6, activation="relu", name="b1"), L.Dense(3, name="b2")], name="base")
    else:
        i = K.Input((4,), name="base_in")
        h = L.Dense(6, activation="relu", name="b1")(i)
        base = K.Model(i, L.Dense(3, name="b2")(L.Concatenate(name="cat")([h, i])), name="base")
    inp = K.Input((4,), name="inp")
    out = L.Dense(2, name="head")(base(inp))
    return base, K.Model(inp, out)


@pytest.mark.parametrize("base_kind", ["sequential", "functional"])
def test_transfer_learning_frozen_base(base_kind):
    (kbase, km), (cbase, cm) = base_and_head(keras, base_kind), base_and_head(kcomp, base_kind)
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["inp", "base", "head"]
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    assert summary_text(cm).count("base (") == 1
    assert f"base ({'Sequential' if base_kind == 'sequential' else 'Functional'})" in summary_text(cm)
    kbase.trainable = False
    cbase.trainable = False
    assert all(not l.trainable for l in cbase.layers)  # Keras sets the flag of every inner layer
    assert len(cm.trainable_weights) == len(km.trainable_weights) == 2
    assert param_totals(summary_text(cm)) == param_totals(summary_text(km))
    expanded = summary_text(cm, expand_nested=True)
    assert "   └ b1 (Dense)" in expanded and "   └ b2 (Dense)" in expanded
    frozen = [w.copy() for w in cbase.get_weights()]
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
    kl = km.train_on_batch(X4, Y2)
    cl = cm.train_on_batch(X4, Y2)
    np.testing.assert_allclose(cl, kl, rtol=1e-5)
    for got, want in zip(cbase.get_weights(), frozen):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    kbase.trainable = True  # fine-tuning: unfreeze, compile again, train everything
    cbase.trainable = True
    assert all(l.trainable for l in cbase.layers)
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
    np.testing.assert_allclose(cm.train_on_batch(X4, Y2), km.train_on_batch(X4, Y2), rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def bn_base_and_head(K, frozen):
    L = K.layers
    base = K.Sequential([K.Input((4,)), L.Dense(5, name="bd"), L.BatchNormalization(name="bn")], name="base")
    inp = K.Input((4,), name="inp")
    model = K.Model(inp, L.Dense(2, name="head")(base(inp)))
    base.trainable = not frozen
    model.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
    return model


def _bn_step_matches_keras(frozen):
    km, cm = bn_base_and_head(keras, frozen), bn_base_and_head(kcomp, frozen)
    weights = [w + 0.3 for w in km.get_weights()]  # moving statistics away from 0 and 1
    km.set_weights(weights)
    cm.set_weights(weights)
    np.testing.assert_allclose(cm.train_on_batch(X4, Y2), km.train_on_batch(X4, Y2), rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return cm, weights


def test_a_frozen_batch_norm_runs_in_inference_mode_as_in_keras():
    cm, weights = _bn_step_matches_keras(frozen=True)
    for got, want in zip(cm.get_layer("base").get_weights(), weights[:6]):
        np.testing.assert_array_equal(got, want)  # moving statistics included


def test_a_trainable_batch_norm_inside_a_nested_model_trains_as_in_keras():
    _bn_step_matches_keras(frozen=False)


def test_a_base_whose_layer_names_a_new_head_would_take():
    # A base model from a file (or another session) has layers named "dense", "dense_1"; the new
    # head's automatic name must not be one of them (kcomp's weights are named by layer path).
    def make(K):
        base = K.Sequential([K.Input((4,)), K.layers.Dense(3, name="dense"), K.layers.Dense(2, name="dense_1")])
        inp = K.Input((4,))
        return K.Model(inp, K.layers.Dense(1)(base(inp)))

    km = make(keras)  # Keras names the head "dense" as well: nested names may repeat there
    kcomp.backend.clear_session()
    cm = make(kcomp)
    assert cm.layers[-1].name not in ("dense", "dense_1")
    copy_weights(km, cm)
    same_predictions(km, cm, X4)


def test_a_model_is_traced_inline_into_the_outer_graph():
    _, cm = base_and_head(kcomp, "sequential")
    graph = cm.to_graph()
    assert [p.name for p in graph.params] == ["b1/kernel", "b1/bias", "b2/kernel", "b2/bias", "head/kernel", "head/bias"]
    assert [n.op for n in graph.nodes].count("matmul") == 3


def test_a_model_as_a_layer_of_a_sequential():
    def make(K):
        i = K.Input((4,))
        inner = K.Model(i, K.layers.Dense(3, name="fd")(i), name="inner")
        return K.Sequential([inner, K.layers.Dense(2, name="top")])

    km, cm = make(keras), make(kcomp)
    assert km.built and cm.built
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["inner", "top"]
    assert cm.output_shape == km.output_shape == (None, 2)
    copy_weights(km, cm)
    same_predictions(km, cm, X4)
    assert param_totals(summary_text(cm)) == param_totals(summary_text(km))


def test_a_model_called_twice_shares_its_weights():
    def make(K):
        L = K.layers
        i = K.Input((4,), name="bi")
        twin = K.Model(i, L.Dense(3, activation="tanh", name="bd")(i), name="twin")
        a, b = K.Input((4,), name="a"), K.Input((4,), name="b")
        return K.Model([a, b], L.Dense(1, name="out")(L.Subtract(name="sub")([twin(a), twin(b)])))

    km, cm = make(keras), make(kcomp)
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["a", "b", "twin", "sub", "out"]
    copy_weights(km, cm)
    same_predictions(km, cm, [X4, X4[::-1]])
    assert [p.name for p in cm.to_graph().params] == ["bd/kernel", "bd/bias", "out/kernel", "out/bias"]
    text = summary_text(cm)
    assert "twin[0][0]" in text and "twin[1][0]" in text and param_totals(text) == param_totals(summary_text(km))
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
    y = RNG.normal(size=(10, 1)).astype("float32")
    np.testing.assert_allclose(cm.train_on_batch([X4, X4[::-1]], y), km.train_on_batch([X4, X4[::-1]], y), rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_an_unbuilt_sequential_called_on_a_tensor_builds():
    inner = kcomp.Sequential([kcomp.layers.Dense(3, name="g1")], name="nb")
    y = inner(kcomp.Input((5,)))
    assert inner.built and y.shape == (None, 3)


def test_feature_extractor_from_layer_outputs():
    def make(K):
        i = K.Input((4,), name="fin")
        h = K.layers.Dense(6, activation="relu", name="x")(i)
        base = K.Model(i, K.layers.Dense(2, name="y")(h))
        return base, K.Model(base.input, base.get_layer("x").output)

    (kbase, kfe), (cbase, cfe) = make(keras), make(kcomp)
    assert cbase.input is cbase.inputs[0] and cbase.output is cbase.outputs[0]
    assert [l.name for l in cfe.layers] == [l.name for l in kfe.layers] == ["fin", "x"]
    copy_weights(kbase, cbase)
    same_predictions(kfe, cfe, X4)
    d = cbase.get_layer("x")
    assert d.input is cbase.input and d.output.shape == (None, 6)


def test_feature_extractor_from_a_sequential_uses_inputs_as_in_keras():
    def make(K):
        return K.Sequential([K.Input((4,)), K.layers.Dense(6, name="x"), K.layers.Dense(2, name="y")])

    kbase, cbase = make(keras), make(kcomp)
    with pytest.raises(AttributeError):
        kbase.input  # Keras 3 defines it only where the Sequential model was called
    with pytest.raises(AttributeError, match="inputs"):
        cbase.input
    kfe = keras.Model(kbase.inputs, kbase.get_layer("x").output)
    cfe = kcomp.Model(cbase.inputs, cbase.get_layer("x").output)
    copy_weights(kbase, cbase)
    same_predictions(kfe, cfe, X4)


def test_layer_input_and_output():
    a, b = kcomp.Input((2,)), kcomp.Input((2,))
    shared = kcomp.layers.Dense(3)
    ya, yb = shared(a), shared(b)
    assert shared.input is a and shared.output is ya  # the first call's, as in Keras
    merge = kcomp.layers.Add()
    s = merge([ya, yb])
    assert merge.input == [ya, yb] and merge.output is s
    with pytest.raises(AttributeError):
        keras.layers.Dense(3).input
    with pytest.raises(AttributeError, match="never been called"):
        kcomp.layers.Dense(3).output
    with pytest.raises(KcompError, match="never been called"):
        kcomp.layers.Dense(3).input


# -- custom layers ----------------------------------------------------------------------------
def custom_layers(K):
    class Linear(K.layers.Layer):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            # A frozen weight made first: Keras lists trainable weights before frozen ones.
            self.scale = self.add_weight(shape=(self.units,), initializer="ones", trainable=False, name="scale")
            self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal", name="w")
            self.b = self.add_weight(shape=(self.units,), initializer="zeros", trainable=True)

        def call(self, inputs):
            y = K.ops.matmul(inputs, self.w) + self.b  # arithmetic with weights, as Keras's guide writes it
            return y * self.scale

    class Swish(K.layers.Layer):
        def call(self, inputs):
            return K.ops.multiply(inputs, K.ops.sigmoid(inputs))

    return Linear, Swish


def test_custom_layer_written_the_keras_way_traces_and_trains():
    def make(K):
        Linear, Swish = custom_layers(K)
        return K.Sequential([K.Input((4,)), Linear(5, name="lin"), Swish(name="sw"), K.layers.Dense(2, name="d")])

    km, cm = make(keras), make(kcomp)
    lin = cm.get_layer("lin")
    assert [w.name for w in lin.weights] == ["w", "variable", "scale"]  # trainable first, as Keras orders them
    assert [w.shape for w in cm.get_weights()] == [w.shape for w in km.get_weights()]
    weights = km.get_weights()
    weights[2] = RNG.uniform(0.5, 1.5, size=weights[2].shape).astype("float32")  # the frozen scale, not all ones
    km.set_weights(weights)
    cm.set_weights(weights)
    same_predictions(km, cm, X4)
    assert len(cm.trainable_weights) == len(km.trainable_weights) == 4
    assert any(n.op == "matmul" and n.origin == "lin" for n in cm.to_graph().nodes)
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.05), loss="mse")
    np.testing.assert_allclose(cm.train_on_batch(X4, Y2), km.train_on_batch(X4, Y2), rtol=1e-5)
    np.testing.assert_allclose(cm.train_on_batch(X4, Y2), km.train_on_batch(X4, Y2), rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cm.get_weights()[2], weights[2])  # the frozen weight did not move


def composite_block(K):
    class Block(K.layers.Layer):
        """Layers kept as attributes, called in `call`: Keras tracks them and their weights."""

        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.inner = K.layers.Dense(units, activation="relu")
            self.drop = K.layers.Dropout(0.5, seed=4)
            self.proj = K.layers.Dense(units)

        def build(self, input_shape):
            self.gain = self.add_weight(shape=(1,), initializer="ones", name="gain")

        def call(self, inputs):
            h = self.proj(self.drop(self.inner(inputs)))
            return K.ops.add(inputs, K.ops.multiply(h, self.gain))

    return K.Sequential([K.Input((4,)), Block(4, name="block"), K.layers.Dense(2, name="d")])


def test_a_layer_made_of_layers_traces_them_inline_and_owns_their_weights():
    km, cm = composite_block(keras), composite_block(kcomp)
    block = cm.get_layer("block")
    assert [w.name for w in block.weights] == ["gain", "kernel", "bias", "kernel", "bias"]
    copy_weights(km, cm)
    same_predictions(km, cm, X4)  # dropout off in inference
    assert block.count_params() == 1 + 20 + 20
    for training in (True, False):  # the block's training flag reaches its Dropout, as Keras's call context does
        flags = [dict(n.attrs)["training"] for n in cm.to_graph(training=training).nodes if n.op == "dropout"]
        assert flags == [training]
    block.trainable = False
    assert not block.inner.trainable and len(cm.trainable_weights) == 2  # the flag reaches its layers, as in Keras
    km.get_layer("block").trainable = False
    assert len(km.trainable_weights) == 2


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "leaky_relu"])
def test_activation_ops_have_keras_names_and_defaults(name):
    x = np.linspace(-3, 3, 13).astype("float32")
    want = getattr(keras.ops, name)(x).detach().cpu().numpy()
    np.testing.assert_allclose(getattr(kcomp.ops, name)(x).numpy(), want, rtol=1e-6, atol=1e-7)


def test_a_custom_layer_that_skips_super_init_is_told_so():
    class Forgot(kcomp.layers.Layer):
        def __init__(self, units):
            self.units = units

    with pytest.raises(KcompError, match=r"super\(\).__init__"):
        Forgot(3)(kcomp.Input((2,)))


def test_python_arithmetic_on_traced_tensors_as_on_keras_tensors():
    def make(K):
        class Residual(K.layers.Layer):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.inner = K.layers.Dense(4, activation="tanh")

            def call(self, inputs):
                return inputs + self.inner(inputs) * 0.5 - 1.0 / (3.0 + inputs * inputs) - -inputs / 2.0

        return K.Sequential([K.Input((4,)), Residual(name="res"), K.layers.Dense(2, name="d")])

    km, cm = make(keras), make(kcomp)
    copy_weights(km, cm)
    same_predictions(km, cm, X4)


def test_what_kcomp_cannot_trace_is_named_with_the_ops_to_use():
    class Sine(kcomp.layers.Layer):
        def call(self, inputs):
            return np.sin(inputs)

    with pytest.raises(KcompError, match=r"Sine.*kcomp.ops"):
        Sine()(kcomp.Input((2,)))


def test_add_weight_takes_keras_3_arguments():
    layer = kcomp.layers.Layer(name="holder")
    with pytest.raises(ValueError, match="keyword"):
        keras.layers.Layer().add_weight("w", (2,))
    with pytest.raises(KcompError, match=r"name='w'"):
        layer.add_weight("w", (2,))
    v = layer.add_weight(shape=(2, 3))
    assert v.shape == (2, 3) and v.name == "variable" and v.path == "holder/variable"
    assert layer.add_weight().shape == ()  # a scalar, named variable_1
    assert layer.add_weight(shape=(4,), dtype="int32").numpy().tolist() == [0, 0, 0, 0]  # ints default to zeros
    with pytest.raises(KcompError, match="fully defined"):
        layer.add_weight(shape=(None, 3))
    frozen = layer.add_weight(shape=(1,), trainable=False, name="f")
    layer.add_weight(shape=(1,), name="late")
    order = [w.name for w in layer.weights]
    assert order == ["variable", "variable_1", "variable_2", "late", "f"]
    v.trainable = False  # Keras keeps a layer's weight order whatever the flags become
    assert [w.name for w in layer.weights] == order and frozen not in layer.trainable_weights


def subclassed(K, rate=0.0):
    class Net(K.Model):
        """Keras's third way: a Model subclass with its layers as attributes and its own call."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.head = K.layers.Dense(2, name="head")  # set first: Keras lists layers in this order
            self.body = K.layers.Dense(5, activation="relu", name="body")
            self.drop = K.layers.Dropout(rate, name="drop")

        def call(self, inputs, training=False):
            h = self.drop(self.body(inputs), training=training)
            if training:  # a Python branch on the flag, as Keras code often has
                h = K.ops.multiply(h, 1.0)
            return self.head(K.ops.concatenate([h, inputs], axis=-1))

    return Net(name="net")


def test_a_subclassed_model_builds_on_its_first_data_and_trains_as_keras():
    km, cm = subclassed(keras), subclassed(kcomp)
    assert not cm.built and "0 (unbuilt)" in summary_text(cm)
    for m, K in ((km, keras), (cm, kcomp)):
        m.compile(optimizer=K.optimizers.SGD(learning_rate=0.1), loss="mse")
    km.predict(X4, verbose=0)
    cm.predict(X4, verbose=0)
    assert [l.name for l in cm.layers] == [l.name for l in km.layers] == ["head", "body", "drop"]
    copy_weights(km, cm)  # head's weights first, as Keras orders them
    same_predictions(km, cm, X4)
    np.testing.assert_allclose(cm.train_on_batch(X4, Y2), km.train_on_batch(X4, Y2), rtol=1e-5)
    for got, want in zip(cm.get_weights(), km.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    text = summary_text(cm)
    assert "body (Dense)" in text and "(None, 5)" in text and param_totals(text)[0] == "45"


def test_a_subclassed_model_built_with_an_input_shape():
    km, cm = subclassed(keras), subclassed(kcomp)
    for m in (km, cm):  # a subclass's default name is its class's, snake case (kcomp skips the "net" given above)
        assert type(m)(name=None).name.startswith("net")
    km.build((None, 4))
    cm.build((None, 4))
    # Keras marks it built but makes the layers' weights only on the first data; kcomp traces call at once.
    assert cm.built and param_totals(summary_text(cm))[0] == "45"
    km.predict(X4, verbose=0)
    copy_weights(km, cm)
    same_predictions(km, cm, X4)


def test_a_subclassed_model_passes_its_training_flag_and_nests():
    cm = subclassed(kcomp, rate=0.5)
    inp = kcomp.Input((4,))
    outer = kcomp.Model(inp, kcomp.layers.Dense(1, name="top")(cm(inp)))  # built by the tensor, nested
    assert [l.name for l in outer.layers][1:] == ["net", "top"] and len(outer.weights) == 6
    for training in (True, False):
        flags = [dict(n.attrs)["training"] for n in outer.to_graph(training=training).nodes if n.op == "dropout"]
        assert flags == [training]


# -- Keras's order of layers and weights in branched models -------------------------------------
def inception(K):
    L = K.layers
    x = K.Input((6,), name="x")
    a = L.Dense(4, name="a")(x)
    b1 = L.Dense(5, name="b1")(x)
    b2 = L.Dense(4, name="b2")(b1)
    c = L.Dense(3, name="c")(L.Dense(2, name="c0")(L.Dense(7, name="c00")(x)))
    return K.Model(x, L.Dense(2, name="out")(L.Concatenate(name="cat")([a, b2, c])))


def residual(K):
    L = K.layers
    x = K.Input((5,), name="x")
    h = L.Dense(5, activation="relu", name="h1")(x)
    h = L.Dense(5, name="h2")(h)
    s = L.Add(name="skip")([h, x])
    t = L.Dense(5, activation="relu", name="h3")(s)
    return K.Model(x, L.Dense(1, name="out")(L.Add(name="skip2")([t, L.Dense(5, name="proj")(x)])))


def two_in_two_out_shared(K):
    L = K.layers
    p, q = K.Input((3,), name="p"), K.Input((4,), name="q")
    shared = L.Dense(3, name="shared")
    sp = shared(p)
    sq = shared(L.Dense(3, name="q_in")(q))
    deep = L.Dense(2, name="deep")(L.Dense(6, name="mid")(L.Concatenate(name="j")([sp, sq])))
    side = L.Dense(4, name="side")(sq)
    return K.Model([p, q], [side, deep])


def embedding_and_norm(K):
    L = K.layers
    ids = K.Input((5,), dtype="int32", name="ids")
    feats = K.Input((3,), name="feats")
    e = L.Flatten(name="flat")(L.Embedding(11, 2, name="emb")(ids))
    f = L.BatchNormalization(name="bn")(L.Dense(4, name="fd")(feats))
    return K.Model([feats, ids], L.Dense(1, name="out")(L.Concatenate(name="j")([f, e])))


def shared_at_two_depths(K):
    # One layer called near an output (on p) and far from the other (on q): Keras gives a layer its
    # deepest call's depth, and what feeds its near call (p) then sits deeper than that too.
    L = K.layers
    p, q = K.Input((4,), name="p"), K.Input((4,), name="q")
    shared = L.Dense(4, activation="tanh", name="shared")
    near = L.Dense(2, name="near")(shared(p))
    far = L.Dense(2, name="far")(L.Dense(3, name="f2")(L.Dense(4, name="f1")(shared(q))))
    return K.Model([p, q], [near, far])


@pytest.mark.parametrize("make", [inception, residual, two_in_two_out_shared, embedding_and_norm, shared_at_two_depths])
def test_branched_models_list_layers_and_weights_in_keras_order(make):
    km, cm = make(keras), make(kcomp)
    assert [l.name for l in cm.layers] == [l.name for l in km.layers]
    assert [w.shape for w in cm.get_weights()] == [tuple(w.shape) for w in km.get_weights()]
    weights = [w + RNG.uniform(0.1, 0.5, size=w.shape).astype(w.dtype) for w in km.get_weights()]  # no zero biases
    km.set_weights(weights)
    cm.set_weights(weights)
    xs = []
    for t in km.inputs:
        shape = (7, *t.shape[1:])
        xs.append(RNG.integers(0, 11, size=shape).astype("int32") if "int" in t.dtype else RNG.normal(size=shape).astype("float32"))
    same_predictions(km, cm, xs if len(xs) > 1 else xs[0], rtol=1e-4, atol=1e-5)
    assert cm.input_shape == km.input_shape and cm.output_shape == km.output_shape


def test_the_walk_order_breaks_ties_in_keras_order():
    # Two layers at the same depth: Keras lists first the one the walk from the outputs reaches first.
    def make(K):
        L = K.layers
        x = K.Input((3,), name="x")
        return K.Model(x, [L.Dense(2, name="zz")(x), L.Dense(2, name="aa")(x)])

    assert [l.name for l in make(kcomp).layers] == [l.name for l in make(keras).layers] == ["x", "zz", "aa"]


# -- utilities ----------------------------------------------------------------------------------
def test_utils_match_keras():
    ids = [0, 2, 1, 3]
    want = keras.utils.to_categorical(ids)
    got = kcomp.utils.to_categorical(ids)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    want = keras.utils.to_categorical(np.array([[1], [0]]), 4)
    np.testing.assert_array_equal(kcomp.utils.to_categorical(np.array([[1], [0]]), 4), want)
    seqs = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]
    for kwargs in ({}, {"maxlen": 4, "padding": "post", "truncating": "post", "value": -1}):
        want = keras.utils.pad_sequences(seqs, **kwargs)
        got = kcomp.utils.pad_sequences(seqs, **kwargs)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_predict_and_call_shapes_as_keras_returns_them():
    """Model(x, [y]) gives the array itself from predict and a call, and predict([x]) is taken on a
    one-input model, as Keras 3 does."""
    import torch

    def build(lib):
        inp = lib.Input((4,))
        return lib.Model(inp, [lib.layers.Dense(2)(inp)])

    ours, theirs = build(kcomp), build(keras)
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    a, b = ours.predict([x], verbose=0), theirs.predict([x], verbose=0)
    assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert isinstance(ours(x), torch.Tensor) and isinstance(theirs(x), torch.Tensor)


def test_predict_on_batch_as_keras_returns_it():
    """predict_on_batch runs its rows as one batch (no callbacks, no progress bar): Keras's arrays for
    one input, two inputs by list and by name, two outputs, and no rows."""
    def build(lib):
        a, b = lib.Input((4,), name="a"), lib.Input((3,), name="b")
        h = lib.layers.Concatenate()([lib.layers.Dense(5, activation="relu")(a), b])
        return lib.Model([a, b], [lib.layers.Dense(2)(h), lib.layers.Dense(1, activation="sigmoid")(h)])

    ours, theirs = build(kcomp), build(keras)
    theirs.set_weights(ours.get_weights())
    rng = np.random.default_rng(1)
    a, b = rng.random((7, 4)).astype("float32"), rng.random((7, 3)).astype("float32")
    for x in ([a, b], {"a": a, "b": b}, [a[:0], b[:0]]):
        got, want = ours.predict_on_batch(x), theirs.predict_on_batch(x)
        assert isinstance(got, list) and len(got) == len(want) == 2
        for g, w in zip(got, want):
            assert isinstance(g, np.ndarray) and g.shape == np.asarray(w).shape
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-5, atol=1e-6)
    single_ours = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(3)])
    single_theirs = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    single_theirs.set_weights(single_ours.get_weights())
    got = single_ours.predict_on_batch(a)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, np.asarray(single_theirs.predict_on_batch(a)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda lib: lib.layers.Dense(3, activation="relu", kernel_initializer="he_normal"),
    lambda lib: lib.layers.Conv2D(4, 3, strides=2, padding="same"),
    lambda lib: lib.layers.LSTM(5, return_sequences=True),
    lambda lib: lib.layers.BatchNormalization(momentum=0.9),
    lambda lib: lib.layers.Embedding(20, 4),
])
def test_a_layer_from_keras_config(make):
    """Layer.from_config reads the config a Keras layer gives (dtype policy objects, initializers with
    their module, Keras-only arguments at their defaults), and gives back the same settings."""
    theirs = make(keras)
    ours = type(make(kcomp)).from_config(theirs.get_config())
    got = ours.get_config()
    for key, value in make(kcomp).get_config().items():
        if key == "data_format":  # kcomp's default None means Keras's channels_last
            assert got[key] in (value, "channels_last"), key
        elif key != "name":
            assert got[key] == value, key


def test_to_categorical_of_a_tensor_as_keras_torch_backend():
    import torch

    ids = torch.tensor([0, 2, 1])
    ours, theirs = kcomp.utils.to_categorical(ids, 3), keras.utils.to_categorical(ids, 3)
    assert isinstance(ours, torch.Tensor) and ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)
    with pytest.raises(kcomp.KcompError, match="num_classes"):
        kcomp.utils.to_categorical(ids)


def test_summary_show_trainable_marks_layers_as_keras_does():
    rows = {}
    for lib in (kcomp, keras):
        inp = lib.Input((4,))
        frozen = lib.layers.Dense(3, name="frozen")
        out = lib.layers.Dense(2, name="head")(lib.layers.Dropout(0.5, name="drop")(frozen(inp)))
        model = lib.Model(inp, out)
        frozen.trainable = False
        lines = []
        model.summary(show_trainable=True, print_fn=lambda text, *a, **k: lines.append(text))
        text = "\n".join(lines)
        rows[lib.__name__] = {name: next(line for line in text.splitlines() if f"{name} (" in line).rstrip(" │").split()[-1]
                              for name in ("frozen", "drop", "head")}
    assert rows["kcomp"] == rows["keras"] == {"frozen": "N", "drop": "-", "head": "Y"}


def test_freezing_after_compile_takes_effect_at_the_next_fit_as_in_keras():
    """Fine-tuning: train, freeze the first layer, train on without compiling again (and unfreeze)."""
    def build(lib):
        inp = lib.Input((4,))
        return lib.Model(inp, lib.layers.Dense(1, name="b")(lib.layers.Dense(3, name="a")(inp)))

    ours, theirs = build(kcomp), build(keras)
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(2).random((10, 4)).astype("float32")
    y = np.random.default_rng(3).random((10, 1)).astype("float32")
    for model in (ours, theirs):
        model.compile(optimizer=(kcomp if model is ours else keras).optimizers.SGD(0.1), loss="mse",
                      **({"backend": "reference"} if model is ours else {}))
    for freeze in (False, True, False):
        for model in (ours, theirs):
            model.get_layer("a").trainable = not freeze
        before = ours.get_layer("a").get_weights()[0].copy()
        losses = [m.fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0).history["loss"][0] for m in (ours, theirs)]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
        assert np.array_equal(before, ours.get_layer("a").get_weights()[0]) == freeze
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
