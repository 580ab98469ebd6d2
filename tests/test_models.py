"""Sequential and functional models: building, parameter counts, summary, predict."""

import gc
import weakref

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import KcompError, NotBuiltError, ShapeError
from kcomp.layers import (
    LSTM, Activation, Add, BatchNormalization, Concatenate, Conv2D, Dense, Dropout, Embedding, Flatten, Input, MaxPooling2D,
    SimpleRNN,
)
from kcomp.models import Model, Sequential


def seed_mlp():
    model = Sequential()
    model.add(Dense(units=64, activation="relu", input_dim=100))
    model.add(Dense(units=10, activation="softmax"))
    return model


def seed_sentiment():
    model = Sequential()
    model.add(Embedding(10000, 32, input_length=500))
    model.add(LSTM(32))
    model.add(Dense(1, activation="sigmoid"))
    return model


def keras_mnist_convnet():
    # Keras's "Simple MNIST convnet" example; Keras reports 34,826 parameters.
    return Sequential(
        [
            Input(shape=(28, 28, 1)),
            Conv2D(32, kernel_size=(3, 3), activation="relu"),
            MaxPooling2D(pool_size=(2, 2)),
            Conv2D(64, kernel_size=(3, 3), activation="relu"),
            MaxPooling2D(pool_size=(2, 2)),
            Flatten(),
            Dropout(0.5),
            Dense(10, activation="softmax"),
        ]
    )


@pytest.mark.parametrize(
    "make, total, per_layer",
    [
        (seed_mlp, 7114, [6464, 650]),
        (seed_sentiment, 328353, [320000, 8320, 33]),
        (keras_mnist_convnet, 34826, [320, 0, 18496, 0, 0, 0, 16010]),
    ],
)
def test_parameter_counts_equal_keras(make, total, per_layer):
    model = make()
    assert model.count_params() == total
    assert [layer.count_params() for layer in model.layers] == per_layer


def test_summary_has_keras_columns_and_totals(capsys):
    seed_mlp().summary()
    out = capsys.readouterr().out
    assert 'Model: "sequential"' in out
    for text in ("Layer (type)", "Output Shape", "Param #", "dense (Dense)", "(None, 64)", "6,464",
                 "dense_1 (Dense)", "(None, 10)", "650", "Total params: 7,114 (27.79 KB)",
                 "Trainable params: 7,114", "Non-trainable params: 0 (0.00 B)"):
        assert text in out


def test_summary_counts_batchnorm_statistics_as_non_trainable():
    model = Sequential([Input(shape=(6,)), Dense(4), BatchNormalization()])
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Total params: 44" in text and "Trainable params: 36" in text and "Non-trainable params: 8" in text


def test_functional_summary_shows_connections():
    a, b = Input(shape=(3,), name="a"), Input(shape=(3,), name="b")
    model = Model([a, b], Add(name="sum")([a, b]))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text and "a[0][0]" in text and "b[0][0]" in text


def test_predict_matches_numpy_and_accepts_numpy_and_torch():
    model = seed_mlp()
    x = np.random.default_rng(0).normal(size=(70, 100)).astype("float32")
    w1, b1, w2, b2 = model.get_weights()
    h = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    want = np.exp(h - h.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    got = model.predict(x, batch_size=32, verbose=0)
    assert isinstance(got, np.ndarray) and got.shape == (70, 10)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(torch.from_numpy(x), verbose=0), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x.astype("float64"), batch_size=7, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_sequential_list_add_and_input_forms_build_the_same_graph():
    from kcomp.ir import print_graph

    kcomp.backend.clear_session()
    a = Sequential([Dense(8, activation="relu", input_shape=(5,)), Dense(2)])
    kcomp.backend.clear_session()
    b = Sequential([Input(shape=(5,)), Dense(8, activation="relu"), Dense(2)])
    kcomp.backend.clear_session()
    c = Sequential()
    c.add(Dense(8, activation="relu"))
    c.add(Dense(2))
    c.predict(np.ones((3, 5), "float32"), verbose=0)  # builds from the data
    texts = [print_graph(m.to_graph()).replace(m.name, "M") for m in (a, b, c)]
    assert texts[0] == texts[1] == texts[2]


def test_unbuilt_sequential_summary_is_keras_table_and_count_params_says_how_to_build():
    model = Sequential([Dense(3)])
    lines = []
    model.summary(print_fn=lines.append)  # Keras prints the layers with "?" and "0 (unbuilt)"
    text = "\n".join(lines)
    assert "dense (Dense)" in text and "?" in text and "0 (unbuilt)" in text and "Total params: 0 (0.00 B)" in text
    with pytest.raises(NotBuiltError, match="input_shape"):
        model.count_params()


def test_functional_several_inputs_and_outputs():
    image = Input(shape=(8, 8, 3), name="image")
    meta = Input(shape=(4,), name="meta")
    x = Conv2D(5, 3, padding="same", activation="relu")(image)
    x = MaxPooling2D()(x)
    x = Flatten()(x)
    joined = Concatenate()([x, Dense(6)(meta)])
    score = Dense(1, activation="sigmoid", name="score")(joined)
    klass = Dense(3, activation="softmax", name="klass")(joined)
    model = Model(inputs=[image, meta], outputs=[score, klass])
    rng = np.random.default_rng(1)
    xi, xm = rng.normal(size=(6, 8, 8, 3)), rng.normal(size=(6, 4))
    s, k = model.predict([xi, xm], batch_size=4, verbose=0)
    assert s.shape == (6, 1) and k.shape == (6, 3)
    s2, k2 = model.predict({"image": xi, "meta": xm}, verbose=0)
    np.testing.assert_allclose(s, s2, rtol=1e-6)
    np.testing.assert_allclose(k.sum(1), 1, rtol=1e-5)
    assert model.output_shape == [(None, 1), (None, 3)]
    assert [layer.name for layer in model.layers][:2] == ["image", "conv2d"]


def test_shared_layer_weights_appear_once():
    x = Input(shape=(4,))
    shared = Dense(4, name="shared")
    model = Model(x, shared(shared(x)))
    assert len(model.weights) == 2
    graph = model.to_graph()
    assert [p.name for p in graph.params] == ["shared/kernel", "shared/bias"]
    assert [n.op for n in graph.nodes] == ["matmul", "bias_add", "matmul", "bias_add"]


def test_model_set_weights_round_trip():
    model = seed_mlp()
    new = [np.random.default_rng(2).normal(size=w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(new)
    for got, want in zip(model.get_weights(), new):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(KcompError, match="4 weights"):
        model.set_weights(new[:3])


def test_predict_reads_the_weights_as_they_are_now():
    """Model.params keeps the list of weights between predict calls: a weight given a new tensor
    (set_weights, assign) is read anew, and a model whose structure changed reads its new weights."""
    model = seed_mlp()
    x = np.random.default_rng(0).normal(size=(3, 100)).astype("float32")

    def numpy_predict(weights):
        k1, b1, k2, b2 = weights
        logits = np.maximum(x @ k1 + b1, 0) @ k2 + b2
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    model.predict_on_batch(x)
    new = [np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in model.get_weights()]
    model.set_weights(new)
    np.testing.assert_allclose(model.predict_on_batch(x), numpy_predict(new), rtol=1e-5, atol=1e-6)
    new[2] = new[2] * 0.5
    model.layers[1].kernel.assign(new[2])
    np.testing.assert_allclose(model.predict_on_batch(x), numpy_predict(new), rtol=1e-5, atol=1e-6)
    model.pop()
    model.add(Dense(3, name="replaced"))
    assert model.predict_on_batch(x).shape == (3, 3)
    assert list(model.params()) == [w.path for w in model.weights] and "replaced/kernel" in model.params()
    # The kept list does not keep a dropped executor alive (a GPU one holds device copies of the weights).
    dropped = weakref.ref(model.executor())
    model.compile(optimizer="sgd", loss="mse")
    gc.collect()
    assert dropped() is None


def test_predict_checks_the_data_against_the_input_shape():
    """Fixed dims must match, unknown ones (None) take any size, the rank must match; integers
    given to a float input are converted."""
    fixed = seed_mlp()
    with pytest.raises(ShapeError, match=r"expects input 0 .* of shape \(None, 100\), received data of shape \(2, 99\)"):
        fixed.predict_on_batch(np.zeros((2, 99), "float32"))
    with pytest.raises(ShapeError, match=r"received data of shape \(2, 100, 1\)"):
        fixed.predict_on_batch(np.zeros((2, 100, 1), "float32"))
    assert fixed.predict_on_batch(np.ones((2, 100), "int64")).dtype == np.float32
    sequences = Sequential([Input(shape=(None, 3)), LSTM(2)])
    assert sequences.predict_on_batch(np.zeros((2, 5, 3), "float32")).shape == (2, 2)
    assert sequences.predict_on_batch(np.zeros((1, 7, 3), "float32")).shape == (1, 2)
    with pytest.raises(ShapeError, match=r"of shape \(None, None, 3\), received data of shape \(2, 5, 4\)"):
        sequences.predict_on_batch(np.zeros((2, 5, 4), "float32"))


def test_a_model_called_as_a_layer_checks_what_it_is_given():
    """An inner model takes tensors of its Inputs' shapes (unknown sizes match anything), as many
    as it has Inputs, and converts other dtypes to its Input's, as Keras does."""
    inner = Sequential([Input(shape=(4,)), Dense(2, name="inner_dense")])
    with pytest.raises(ShapeError, match=r"expects input 0 .* of shape \(None, 4\), received a tensor of shape \(None, 5\)"):
        Model(x := Input(shape=(5,)), inner(x)).to_graph()
    with pytest.raises(KcompError, match="has 1 inputs, received 2 tensors"):
        Model([a := Input(shape=(4,)), b := Input(shape=(4,))], inner([a, b])).to_graph()
    ids = Input(shape=(4,), dtype="int32")
    outer = Model(ids, inner(ids))
    assert [n.op for n in outer.to_graph().nodes][0] == "cast"
    data = np.arange(8, dtype="int32").reshape(2, 4)
    np.testing.assert_allclose(outer.predict_on_batch(data), inner.predict_on_batch(data.astype("float32")), rtol=1e-6)


def test_weights_are_contiguous_however_given():
    """Kernels write weights in place (the optimizer's), which needs contiguous buffers: a square
    orthogonal recurrent kernel (QR's factor is column-major) and a Fortran-ordered array given to
    set_weights are stored contiguous, and a SimpleRNN trains on the generated kernels."""
    model = Sequential([Input(shape=(4, 3)), SimpleRNN(5), Dense(2)])
    assert all(w.value.is_contiguous() for w in model.weights)
    model.set_weights([np.asfortranarray(w) for w in model.get_weights()])
    assert all(w.value.is_contiguous() for w in model.weights)
    model.compile(optimizer="adam", loss="mse", backend="triton-interpret")
    model.train_on_batch(np.ones((2, 4, 3), "float32"), np.ones((2, 2), "float32"))
    assert all(w.value.is_contiguous() for w in model.weights)


def test_dropout_is_identity_in_predict():
    model = Sequential([Input(shape=(50,)), Dropout(0.5)])
    x = np.random.default_rng(3).normal(size=(4, 50)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)


def test_sentiment_model_predicts_on_padded_sequences():
    from kcomp.preprocessing import sequence

    model = Sequential([Embedding(50, 8, input_length=12), LSTM(6), Dense(1, activation="sigmoid")])
    rng = np.random.default_rng(4)
    seqs = [list(rng.integers(1, 50, size=n)) for n in (3, 15, 12, 1)]
    x = sequence.pad_sequences(seqs, maxlen=12)
    p = model.predict(x, verbose=0)
    assert p.shape == (4, 1) and np.all((p > 0) & (p < 1))


def test_predict_progress_bar(capsys):
    seed_mlp().predict(np.ones((70, 100), "float32"), batch_size=32, verbose=1)
    assert "3/3" in capsys.readouterr().out


def test_model_called_on_data_returns_tensors():
    model = seed_mlp()
    out = model(np.ones((2, 100), "float32"))
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 10)


def test_shared_layer_is_one_summary_row_with_every_call():
    a, b = Input(shape=(4,), name="a"), Input(shape=(4,), name="b")
    shared = Dense(3, name="shared")
    model = Model([a, b], Add()([shared(a), shared(b)]))
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert text.count("shared (Dense)") == 1
    assert "shared[0][0]" in text and "shared[1][0]" in text
    assert "Total params: 15" in text


def test_frozen_layers_and_models_freeze_their_ir_parameters():
    frozen = Dense(3, trainable=False)
    model = Sequential([Input(shape=(4,)), frozen, Dense(2)])
    graph = model.to_graph()
    assert {graph.param(f"{frozen.name}/kernel").id, graph.param(f"{frozen.name}/bias").id} == set(graph.frozen_params)
    model.trainable = False
    assert len(model.to_graph().frozen_params) == 4


def test_deep_models_do_not_hit_the_recursion_limit():
    x = Input(shape=(2,))
    y = x
    for _ in range(1500):
        y = Activation("relu")(y)
    model = Model(x, y)
    assert len(model.to_graph().nodes) == 1500


def test_training_flag_given_at_call_is_kept():
    x = Input(shape=(200,))
    model = Model(x, Dropout(0.5, seed=3)(x, training=True))  # Monte Carlo dropout
    out = model.predict(np.ones((2, 200), "float32"), verbose=0)
    assert (out == 0).mean() > 0.3


def test_unsupported_call_arguments_are_named():
    with pytest.raises(KcompError, match="initial_state"):
        LSTM(4)(Input(shape=(3, 2)), initial_state=[None, None])


def test_two_variable_length_inputs_merge():
    tok, pos = Input(shape=(None,), dtype="int32"), Input(shape=(None,), dtype="int32")
    s = Add()([Embedding(10, 4)(tok), Embedding(20, 4)(pos)])
    model = Model([tok, pos], s)
    ids = np.array([[1, 2, 3]])
    assert model.predict([ids, ids], verbose=0).shape == (1, 3, 4)
