"""compile / fit / evaluate / predict as a Keras user runs them, on the reference executor."""

import math
import os

import numpy as np
import pytest
import torch

import kcomp
from kcomp import callbacks, optimizers
from kcomp.errors import KcompError, ShapeError
from kcomp.layers import BatchNormalization, Dense, Input
from kcomp.models import Sequential
from kernel_helpers import assert_compiled_steps_match_the_reference


def digits():
    """scikit-learn's 1797 digits, shuffled (kcomp.datasets.digits), as flat float32 rows in [0, 1]."""
    (x, labels), _ = kcomp.datasets.digits.load_data(test_split=0, seed=0)
    return (x.reshape(len(x), 64) / 16.0).astype("float32"), labels


def test_the_seed_document_runs_with_kcomp():
    # The seed's code, `keras` replaced by `kcomp`, on random data of the same shapes.
    from kcomp.layers import Dense
    from kcomp.models import Sequential

    rng = np.random.default_rng(0)
    X_train, X_test = rng.random((256, 100), dtype=np.float32), rng.random((64, 100), dtype=np.float32)
    y_train = kcomp.utils.to_categorical(rng.integers(0, 10, 256), 10)
    y_test = kcomp.utils.to_categorical(rng.integers(0, 10, 64), 10)

    model = Sequential()
    model.add(Dense(units=64, activation="relu", input_dim=100))
    model.add(Dense(units=10, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(X_train, y_train, epochs=2, batch_size=32, verbose=0)
    loss, accuracy = model.evaluate(X_test, y_test, verbose=0)
    predictions = model.predict(X_test, verbose=0)
    assert sorted(history.history) == ["accuracy", "loss"] and len(history.history["loss"]) == 2
    assert math.isfinite(loss) and 0 <= accuracy <= 1 and predictions.shape == (64, 10)


def test_mlp_on_digits_reaches_95_percent():
    x, labels = digits()
    y = kcomp.utils.to_categorical(labels, 10)
    model = Sequential([Input(shape=(64,)), Dense(64, activation="relu"), Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x[:1400], y[:1400], epochs=20, batch_size=32, validation_split=0.2, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    loss, accuracy = model.evaluate(x[1400:], y[1400:], verbose=0)
    assert accuracy >= 0.95, accuracy


@pytest.mark.slow
def test_small_cnn_on_digits_reaches_97_percent():
    from kcomp.layers import Conv2D, Flatten, MaxPooling2D

    x, labels = digits()
    x = x.reshape(-1, 8, 8, 1)
    model = Sequential([
        Input(shape=(8, 8, 1)),
        Conv2D(16, 3, padding="same", activation="relu"), MaxPooling2D(2),
        Conv2D(32, 3, padding="same", activation="relu"), MaxPooling2D(2),
        Flatten(), Dense(64, activation="relu"), Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=optimizers.Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:1400], labels[:1400], epochs=15, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(x[1400:], labels[1400:], verbose=0)
    assert accuracy >= 0.97, accuracy


def test_one_step_equals_torch_autograd_and_keras_sgd():
    model = Sequential([Input(shape=(5,)), Dense(4, activation="tanh"), Dense(3)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    x = np.random.default_rng(1).normal(size=(6, 5)).astype("float32")
    y = np.random.default_rng(2).normal(size=(6, 3)).astype("float32")
    ws = [torch.tensor(w, requires_grad=True) for w in model.get_weights()]
    out = torch.tanh(torch.from_numpy(x) @ ws[0] + ws[1]) @ ws[2] + ws[3]
    loss = ((out - torch.from_numpy(y)) ** 2).mean()
    loss.backward()
    want = [(w - 0.1 * w.grad).detach().numpy() for w in ws]
    got_loss = model.train_on_batch(x, y)
    assert math.isclose(got_loss, loss.item(), rel_tol=1e-5)
    for g, w in zip(model.get_weights(), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_batchnorm_moving_statistics_follow_keras_momentum():
    model = Sequential([Input(shape=(3,)), BatchNormalization(momentum=0.9)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(3).normal(size=(8, 3)).astype("float32") * 2 + 1
    model.train_on_batch(x, np.zeros((8, 3), "float32"))
    _, _, mean, var = model.layers[0].get_weights()
    np.testing.assert_allclose(mean, 0.1 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(0), rtol=1e-5)


def test_validation_split_takes_the_last_samples_before_shuffling():
    seen = []

    class Record(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs)

    x = np.arange(10, dtype="float32").reshape(10, 1)
    model = Sequential([Input(shape=(1,)), Dense(1, kernel_initializer="ones", use_bias=False)])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-9), loss="mae")
    model.fit(x, np.zeros_like(x), validation_split=0.3, epochs=1, verbose=0, callbacks=[Record()])
    assert math.isclose(seen[0]["val_loss"], 8.0, rel_tol=1e-4)  # mean of 7, 8, 9


def test_early_stopping_restores_the_best_weights():
    x = np.random.default_rng(4).normal(size=(32, 4)).astype("float32")
    model = Sequential([Input(shape=(4,)), Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse")
    stop = callbacks.EarlyStopping(monitor="loss", patience=1, restore_best_weights=True, mode="max")  # "max" stops at once
    history = model.fit(x, x[:, :1], epochs=10, verbose=0, callbacks=[stop])
    assert len(history.history["loss"]) == 2 and model.stop_training


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
def test_terminate_on_nan_keeps_the_last_good_weights(backend):
    """Also where the step writes new weights over the old ones in place (the triton backends):
    the callback keeps its own copy of the last good weights and slots, and puts them back."""
    x = np.random.default_rng(5).normal(size=(64, 4)).astype("float32") * 1e3
    model = Sequential([Input(shape=(4,)), Dense(4), Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e3, momentum=0.5), loss="mse", backend=backend)
    history = model.fit(x, x[:, :1] * 1e3, batch_size=8, epochs=5, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert model.stop_training
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(torch.isfinite(s).all() for slots in model.optimizer.slots.values() for s in slots)
    assert len(history.history.get("loss", [])) <= 1


def test_checkpoint_and_weights_round_trip(tmp_path):
    x = np.random.default_rng(6).normal(size=(16, 4)).astype("float32")
    model = Sequential([Input(shape=(4,)), Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "best.weights.npz"
    model.fit(x, x[:, :2], epochs=2, verbose=0, callbacks=[callbacks.ModelCheckpoint(path, monitor="loss", save_best_only=True, save_weights_only=True)])
    saved = model.get_weights()
    model.set_weights([w * 0 for w in saved])
    model.load_weights(path)
    for a, b in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_a_crash_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    model = Sequential([Input(shape=(4,)), Dense(2)])
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = model.get_weights()
    model.set_weights([w + 1 for w in before])

    def killed(*args):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        model.save_weights(path)
    monkeypatch.undo()
    model.load_weights(path)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temp file left behind


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda m, x: m.fit(x, np.zeros((9, 3), "float32"), verbose=0), ShapeError, "same number of samples"),
        (lambda m, x: m.fit(np.full_like(x, np.nan), np.zeros((8, 3), "float32"), verbose=0), KcompError, "NaN"),
        (lambda m, x: m.fit(x, np.zeros((8, 5), "float32"), verbose=0), ShapeError, "do not fit the loss"),
    ],
)
def test_bad_training_data_is_refused_before_a_step(make, error, message):
    model = Sequential([Input(shape=(4,)), Dense(3)])
    model.compile(optimizer="sgd", loss="mse")
    before = model.get_weights()
    with pytest.raises(error, match=message):
        make(model, np.ones((8, 4), "float32"))
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("values, dtype, finite", [
    ([1.0, -2.0, 3.5], torch.float32, True),
    ([1.0, float("nan"), 3.5], torch.float32, False),
    ([1.0, float("inf"), float("-inf")], torch.float32, False),  # their sum is NaN
    ([float("-inf"), 0.0], torch.float64, False),
    ([3e38, 3e38, -1.0], torch.float32, True),  # a sum that overflows: the elements decide
    ([6e4, 6e4, 1.0], torch.float16, True),  # 16-bit data summed in float32
    ([6e4, float("nan")], torch.bfloat16, False),
    ([], torch.float32, True),
])
def test_all_finite_agrees_with_the_element_wise_check(values, dtype, finite):
    from kcomp.training.data import all_finite

    t = torch.tensor(values, dtype=dtype)
    assert all_finite(t) == finite == bool(torch.isfinite(t).all())
    big = torch.randn(64, 257, dtype=dtype)
    if values:
        big.view(-1)[1234 : 1234 + len(values)] = t  # one bad value among many good ones
    assert all_finite(big) == finite


@pytest.mark.parametrize("values, dtype", [
    ([0, 3, 9], torch.int64), ([9, 10], torch.int64), ([-1, 2], torch.int64), ([], torch.int64),
    ([0.0, 9.0], torch.float32), ([2.5, 1.0], torch.float32), ([-0.5, 1.0], torch.float32),
    ([9.99], torch.float32), ([1.0, float("nan")], torch.float32), ([1e30], torch.float32),
])
def test_the_class_id_fast_check_agrees_with_the_element_wise_one(values, dtype):
    from kcomp.training.data import _whole_ids_below

    classes = 10
    for y in (torch.tensor(values, dtype=dtype), torch.tensor(values * 40, dtype=dtype).reshape(-1, 1) if values else None):
        if y is None:
            continue
        whole = y if not y.is_floating_point() else y.floor()
        element_wise = not bool(((whole != y) | (whole < 0) | (whole >= classes)).any())
        assert _whole_ids_below(y, classes) == element_wise


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.int16])
@pytest.mark.parametrize("values", [[0, 3, 9], [9, 10], [0, 12, 5], [2, -1], [], [9] * 300 + [10]])
def test_the_embedding_id_fast_check_agrees_with_the_element_wise_one(values, dtype):
    from kcomp.training.data import _ids_below

    if dtype == torch.uint8 and any(v < 0 for v in values):
        return  # no negative ids to give
    ids = torch.tensor(values, dtype=dtype)
    for shaped in (ids, ids.reshape(-1, 1), ids.flip(0)):
        assert _ids_below(shaped, 10) == (not bool(((shaped < 0) | (shaped >= 10)).any()))


@pytest.mark.parametrize("kwargs, message", [
    ({"optimizer": "adma", "loss": "mse"}, "Did you mean 'adam'"),
    ({"optimizer": "sgd", "loss": "mean_squared_eror"}, "Did you mean 'mean_squared_error'"),
    ({"optimizer": "sgd", "loss": "mse", "metrics": ["acuracy"]}, "Did you mean 'accuracy'"),
])
def test_unknown_names_suggest_the_nearest(kwargs, message):
    model = Sequential([Input(shape=(4,)), Dense(3)])
    with pytest.raises(KcompError, match=message):
        model.compile(**kwargs)


def test_fit_before_compile_says_so():
    model = Sequential([Input(shape=(4,)), Dense(3)])
    with pytest.raises(KcompError, match="compile"):
        model.fit(np.ones((2, 4)), np.ones((2, 3)), verbose=0)


def test_custom_loss_function_and_sparse_labels():
    from kcomp import ops

    def my_loss(y_true, y_pred):  # the seed's "custom loss functions"
        return ops.mean(ops.abs(ops.subtract(y_true, y_pred)), axis=-1)

    x = np.random.default_rng(7).normal(size=(16, 4)).astype("float32")
    model = Sequential([Input(shape=(4,)), Dense(2)])
    model.compile(optimizer="adam", loss=my_loss)
    first = model.evaluate(x, x[:, :2], verbose=0)
    model.fit(x, x[:, :2], epochs=5, verbose=0)
    assert model.evaluate(x, x[:, :2], verbose=0) < first

    clf = Sequential([Input(shape=(4,)), Dense(3, activation="softmax")])
    clf.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logs = clf.fit(x, np.arange(16) % 3, epochs=1, verbose=0).history
    assert set(logs) == {"loss", "accuracy"}


def test_progress_bar_shows_loss_and_metrics(capsys):
    x = np.random.default_rng(8).normal(size=(40, 4)).astype("float32")
    model = Sequential([Input(shape=(4,)), Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x, (x[:, :1] > 0).astype("float32"), epochs=1, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1" in out and "3/3" in out and "loss:" in out and "accuracy:" in out


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_compiled_training_step_under_the_interpreter_equals_the_reference_step(kind):
    from kcomp.layers import Conv2D, Flatten, MaxPooling2D

    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(11)
        if kind == "mlp":
            layers = [Input(shape=(23,)), Dense(19, activation="relu"), BatchNormalization(), Dense(5, activation="softmax")]
        else:
            layers = [Input(shape=(9, 11, 3)), Conv2D(5, 3, padding="same", activation="relu"), MaxPooling2D(),
                      Flatten(), Dense(5, activation="softmax")]
        return Sequential(layers)

    rng = np.random.default_rng(12)
    x = rng.normal(size=(13, 23) if kind == "mlp" else (13, 9, 11, 3)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 5, 13), 5)
    assert_compiled_steps_match_the_reference(make, x, y)


@pytest.mark.parametrize("name, hyper", [("sgd", {"momentum": 0.9, "nesterov": True}), ("rmsprop", {"momentum": 0.5, "centered": True}),
                                         ("adagrad", {}), ("adamw", {"weight_decay": 0.1, "amsgrad": True})])
def test_compiled_step_updates_weights_and_slots_in_one_optimizer_kernel(name, hyper):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(13, 23)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 5, 13), 5)
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(15)
        model = Sequential([Input(shape=(23,)), Dense(19, activation="relu"), Dense(5, activation="softmax")])
        optimizer = optimizers.get(name).__class__(learning_rate=0.05, **hyper)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", backend=backend)
        for _ in range(3):
            model.train_on_batch(x, y)
        slots = [s.numpy() for per in optimizer.slots.values() for s in per]
        results.append((model.get_weights() + slots, model))
    (ref, _), (tri, model) = results
    for a, b in zip(ref, tri, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    (step,) = [s for (kind, *_), s in model._training.steps.items() if kind == "train"]
    nodes = step.runner.graph.nodes
    assert not [n for n in nodes if n.op == "optimizer_update"]  # not left to torch
    assert len([n for n in nodes if n.op == "kernel" and n.attrs["template"] == "optimizer"]) == 1


def test_dropout_draws_a_new_mask_every_training_step():
    from kcomp.layers import Dropout

    model = Sequential([Input(shape=(200,)), Dropout(0.5, seed=1), Dense(1, kernel_initializer="ones", use_bias=False)])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")  # lr 0: the loss shows the mask alone
    x = np.ones((4, 200), "float32")
    losses = [model.train_on_batch(x, np.zeros((4, 1), "float32")) for _ in range(3)]
    assert len(set(losses)) == 3  # three different masks
    np.testing.assert_allclose(model.predict(x, verbose=0), 200.0)  # and inference is the identity


def test_one_dropout_layer_called_twice_draws_two_masks_in_a_step():
    """As Keras's seed generator advances per call: the two calls differ (equal masks would make
    a - b zero), and the compiled step (forward masks and their gradients) equals the reference."""
    from kcomp.layers import Dropout, Subtract
    from kcomp.models import Model

    x = np.ones((3, 64), "float32")
    y = np.zeros((3, 1), "float32")
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        inputs = Input(shape=(64,))
        dropout = Dropout(0.5, seed=1)
        outputs = Dense(1, kernel_initializer="ones", use_bias=False)(Subtract()([dropout(inputs), dropout(inputs)]))
        model = Model(inputs, outputs)
        model.compile(optimizer=optimizers.SGD(learning_rate=1e-3), loss="mse", backend=backend)
        losses = [model.train_on_batch(x, y) for _ in range(2)]
        assert losses[0] > 1.0
        (step,) = model._training.steps.values()
        seeds = {n.attrs["seed"] for n in step.graph.nodes if n.op == "dropout"}
        assert len(seeds) == 2 and 1 in seeds  # the first call keeps the layer's seed
        results.append((losses, model.get_weights()))
    (ref_losses, ref_w), (tri_losses, tri_w) = results
    np.testing.assert_allclose(tri_losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(tri_w[0], ref_w[0], rtol=1e-5)


def test_fit_on_inputs_of_the_wrong_shape_names_both_shapes():
    model = Sequential([Input(shape=(28, 28, 1)), kcomp.layers.Flatten(), Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    with pytest.raises(ShapeError, match=r"\(None, 28, 28, 1\).*\(4, 784\)"):
        model.fit(np.ones((4, 784), "float32"), np.ones((4, 10), "float32"), verbose=0)


def test_compiled_steps_update_the_models_buffers_in_place_and_see_weights_the_user_sets():
    """The triton backends keep weights and slots in device buffers the model itself holds and
    the step updates in place (what a captured CUDA graph needs); evaluate may come first
    (under inference mode), and set_weights between steps is honoured, as on the reference."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 7)).astype("float32")
    y = rng.integers(0, 3, 10)
    replacement = None
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(4)
        model = Sequential([Input(shape=(7,)), Dense(6, activation="relu"), Dense(3, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], backend=backend)
        logs = [model.evaluate(x, y, verbose=0, return_dict=True)]
        logs.append(model.train_on_batch(x, y, return_dict=True))
        kernel = model.layers[0].weights[0]
        held = kernel.value
        logs.append(model.train_on_batch(x, y, return_dict=True))
        if backend != "reference":
            assert kernel.value is held  # updated in place, not replaced
        replacement = replacement or [w * 0.5 for w in model.get_weights()]
        model.set_weights(replacement)
        logs.append(model.train_on_batch(x, y, return_dict=True))
        history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)  # batches of 4, 4 and 2
        logs += [{"loss": loss} for loss in history.history["loss"]]
        logs.append(model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True))
        logs.append(model.test_on_batch(x[:3], y[:3], return_dict=True))  # the shape evaluate's step met in inference mode
        results.append((logs, model.get_weights()))
    (ref_logs, ref_w), (tri_logs, tri_w) = results
    for a, b in zip(ref_logs, tri_logs):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4), (a, b)
    for a, b in zip(ref_w, tri_w):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_logs_are_the_running_loss_and_metrics_as_keras_gives_them():
    """on_train_batch_end sees the epoch's values so far (Keras 3), so the last batch's logs are
    the epoch's; they are computed only when a callback reads them."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(20, 5)).astype("float32"), rng.integers(0, 3, 20)
    model = Sequential([Input(shape=(5,)), Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seen = []
    log = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append((list(logs), dict(logs))))
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[log])
    assert [keys for keys, _ in seen] == [["loss", "accuracy"]] * 3
    tagged = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: logs.update(tag=batch))  # a dict's methods
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[tagged, log])
    assert [logs["tag"] for _, logs in seen[3:]] == [0, 1, 2]
    last = seen[2][1]
    assert math.isclose(last["loss"], history.history["loss"][0], rel_tol=1e-6)
    assert math.isclose(last["accuracy"], history.history["accuracy"][0], rel_tol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
def test_a_schedule_gives_the_first_step_its_rate_at_iteration_zero(backend):
    """Keras evaluates the schedule at the iterations done before the step (then adds one):
    ExponentialDecay(1.0, 1, 0.5) trains the first step at 1.0 and the second at 0.5."""
    model = Sequential([Input(shape=(1,)), Dense(1, use_bias=False, kernel_initializer="ones")])
    schedule = optimizers.schedules.ExponentialDecay(1.0, decay_steps=1, decay_rate=0.5)
    model.compile(optimizer=optimizers.SGD(learning_rate=schedule), loss="mse", backend=backend)
    x, y = np.ones((1, 1), "float32"), np.zeros((1, 1), "float32")
    model.train_on_batch(x, y)  # d/dw (w - 0)^2 = 2w = 2: w = 1 - 1.0 * 2
    assert model.get_weights()[0].item() == pytest.approx(-1.0)
    model.train_on_batch(x, y)  # gradient -2: w = -1 - 0.5 * (-2)
    assert model.get_weights()[0].item() == pytest.approx(0.0, abs=1e-6)
    assert model.optimizer.iterations == 2


def test_regularizers_fuse_into_the_compiled_step_and_match_the_reference():
    """In a training step the weights change every step, so values computed from weights alone
    (a regularizer's penalty and its gradient) are fused kernels there, not torch ops per step."""
    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(9)
        return Sequential([Input(shape=(6,)), Dense(5, activation="relu", kernel_regularizer="l2", bias_regularizer="l1"),
                           Dense(3, activation="softmax", kernel_regularizer=kcomp.regularizers.L1L2(l1=0.01, l2=0.02))])

    rng = np.random.default_rng(10)
    x = rng.normal(size=(9, 6)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 9), 3)
    assert_compiled_steps_match_the_reference(make, x, y, steps=3)
    model = make()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(x, y)
    (step,) = model._training.steps.values()
    torch_ops = {s.node.op for s in step.runner.plan.instructions if s.kind == "torch"}
    assert torch_ops <= {"constant", "count"}, torch_ops  # both made once per plan, not per step


def test_the_step_counts_its_iterations_on_the_device_and_follows_a_count_the_user_sets():
    """Dropout's mask (and Adam's bias correction) follow the step number, which the compiled step
    advances itself; setting optimizer.iterations, as Keras allows, takes effect at the next step.
    With a learning rate of 0 the loss shows the mask alone: step 1's again after the reset."""
    from kcomp.layers import Dropout

    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(6, 4)).astype("float32"), rng.integers(0, 3, 6)
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(12)
        model = Sequential([Input(shape=(4,)), Dropout(0.5, seed=2), Dense(3, activation="softmax")])
        model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy", backend=backend)
        losses = [model.train_on_batch(x, y) for _ in range(2)]
        model.optimizer.iterations = 0  # the next step is step 1 again
        losses.append(model.train_on_batch(x, y))
        assert model.optimizer.iterations == 1
        assert losses[2] == pytest.approx(losses[0], rel=1e-6) and losses[1] != pytest.approx(losses[0], rel=1e-3), losses


@pytest.mark.parametrize("metrics", [[], ["accuracy"]])
def test_weights_gone_to_nan_give_a_nan_loss_on_the_kernels_too(metrics):
    """SGD at a huge learning rate: the weights overflow to inf and NaN by the fourth batch. The
    compiled step reports the NaN loss at the same batch as the reference, so TerminateOnNaN stops
    both there (the softmax cross-entropy kernel had clipped the NaN probabilities to 1e-7 and
    logged 16.118 forever; with the accuracy metric, the interpreter raised on a row of NaN)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 4, 64), 4)
    losses = {}
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(3)
        model = Sequential([Input(shape=(8,)), Dense(16, activation="relu"), Dense(4, activation="softmax")])
        model.compile(optimizer=optimizers.SGD(learning_rate=1e10), loss="categorical_crossentropy", metrics=metrics,
                      backend=backend)
        seen = losses[backend] = []
        record = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs, seen=seen: seen.append(logs["loss"]))
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[record, callbacks.TerminateOnNaN()])
        assert model.stop_training
    reference, kernels = losses["reference"], losses["triton-interpret"]
    assert len(reference) == len(kernels) == 4 and math.isnan(reference[-1]) and math.isnan(kernels[-1])
    np.testing.assert_allclose(kernels[:-1], reference[:-1], rtol=1e-4)


def one_step_with_a_nan_weight(make_layers, x, y, loss="categorical_crossentropy", metrics=(), **clip):
    """One SGD step with the first layer's 5th kernel weight set to NaN, then an evaluate, on the
    reference and on triton-interpret: [(train logs, new weights, evaluate logs)] for each."""
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(5)
        model = Sequential(make_layers())
        first = model.layers[0]
        kernel, bias = first.get_weights()
        kernel.reshape(-1)[4] = np.nan
        first.set_weights([kernel, bias])
        model.compile(optimizer=optimizers.SGD(learning_rate=0.1, **clip), loss=loss, metrics=list(metrics), backend=backend)
        logs = model.train_on_batch(x, y, return_dict=True)
        results.append((logs, model.get_weights(), model.evaluate(x, y, verbose=0, return_dict=True)))
    return results


def assert_same_nan_weights(results):
    (ref_logs, ref_weights, ref_evaluated), (logs, weights, evaluated) = results
    assert math.isnan(ref_logs["loss"]) and math.isnan(logs["loss"]), (ref_logs, logs)
    for got, want in zip(weights, ref_weights, strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, equal_nan=True)
    for got, want in ((logs, ref_logs), (evaluated, ref_evaluated)):
        assert got.keys() == want.keys()
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5, equal_nan=True)


@pytest.mark.parametrize("kind, clip", [("mlp", {"clipvalue": 0.5}), ("mlp", {"clipnorm": 1.0}),
                                        ("mlp", {"global_clipnorm": 1.0}), ("cnn", {})])
def test_a_nan_weight_spreads_through_the_compiled_step_as_through_the_reference(kind, clip):
    """One weight gone to NaN: the loss, the gradients (through the clipping, whose maximum /
    minimum had turned NaN gradients into finite ones: 1 NaN weight after the step where the
    reference has 63; through relu, which had dropped the NaN: a finite loss; max pooling and the
    convs) and the new weights are NaN exactly where the reference's are."""
    from kcomp.layers import Conv2D, Flatten, MaxPooling2D

    rng = np.random.default_rng(21)
    x = rng.normal(size=(6, 8) if kind == "mlp" else (6, 7, 9, 2)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 6), 3)

    def make_layers():
        if kind == "mlp":  # no relu: the clip alone
            return [Input(shape=(8,)), Dense(5), Dense(3, activation="softmax")]
        return [Input(shape=(7, 9, 2)), Conv2D(3, 3, padding="same", activation="relu"), MaxPooling2D(),
                Flatten(), Dense(3, activation="softmax")]

    assert_same_nan_weights(one_step_with_a_nan_weight(make_layers, x, y, **clip))


NAN_LOSSES = [  # (loss, output activation, targets); measured before the kernel fixes, the compiled step gave:
    ("binary_crossentropy", "sigmoid", "binary"),  # loss 8.059 (the clip of probabilities)
    ("kl_divergence", "softmax", "one_hot"),  # 16.118
    ("sparse_categorical_crossentropy", "softmax", "ids"),  # 16.118
    ("categorical_hinge", None, "one_hot"),  # 0.0
    ("mean_squared_logarithmic_error", "relu", "positive"),  # 0.166 and finite weights
    ("huber", None, "normal"),  # a NaN loss but 4 NaN weights where the reference has 63
    ("mse", None, "normal"), ("poisson", "softplus", "positive"),
]


@pytest.mark.parametrize("loss, activation, targets", NAN_LOSSES, ids=[n[0] for n in NAN_LOSSES])
def test_every_loss_reports_a_nan_weight_on_the_kernels_as_on_the_reference(loss, activation, targets):
    rng = np.random.default_rng(22)
    x = rng.normal(size=(6, 8)).astype("float32")
    y = {"binary": (rng.random((6, 3)) > 0.5).astype("float32"), "ids": rng.integers(0, 3, 6),
         "one_hot": kcomp.utils.to_categorical(rng.integers(0, 3, 6), 3),
         "positive": rng.random((6, 3)).astype("float32"), "normal": rng.normal(size=(6, 3)).astype("float32")}[targets]
    metrics = ["accuracy"] if targets in ("ids", "one_hot") else ["mae"]

    def make_layers():
        return [Input(shape=(8,)), Dense(5), Dense(3, activation=activation)]

    assert_same_nan_weights(one_step_with_a_nan_weight(make_layers, x, y, loss=loss, metrics=metrics))
