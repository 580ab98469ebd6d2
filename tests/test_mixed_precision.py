"""Mixed precision as Keras 3 has it: dtype policies, 16-bit compute on float32 weights, and
dynamic loss scaling (LossScaleOptimizer), each against Keras 3 itself (torch backend).

Side by side (tests/keras_oracle.py): the same model and weights in both libraries, trained
step by step; Keras's mixed_bfloat16 and mixed_float16 runs on the CPU are the oracle. The kernels
and the build: tests/test_mixed_precision_kernels.py (no Keras needed there).
"""

import json
import zipfile

import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

import kcomp  # noqa: E402
from kcomp import dtype_policies, mixed_precision  # noqa: E402
from kcomp.errors import KcompError  # noqa: E402
from kcomp.dsl import loads as load_k_text  # noqa: E402
from kcomp.ir.printer import print_graph  # noqa: E402
from kcomp.saving.k_text import model_to_k  # noqa: E402
from keras_oracle import twins  # noqa: E402
from mixed_precision_helpers import data, mlp  # noqa: E402

POLICIES = ["float32", "mixed_float16", "mixed_bfloat16", "float16", "bfloat16"]
# bfloat16 keeps 8 bits of mantissa: agreement to ~1e-2 relative (DESIGN.md's tolerances by dtype).
BF16 = dict(rtol=2e-2, atol=2e-2)


@pytest.fixture(autouse=True)
def float32_policy_after():
    """Each test leaves both libraries' global policy as it found it (float32)."""
    yield
    mixed_precision.set_global_policy("float32")
    keras.mixed_precision.set_global_policy("float32")


# -- policies ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", POLICIES)
def test_policies_are_keras_policies(name):
    ours, theirs = mixed_precision.Policy(name), keras.mixed_precision.DTypePolicy(name)
    assert (ours.name, ours.compute_dtype, ours.variable_dtype) == (theirs.name, theirs.compute_dtype, theirs.variable_dtype)
    assert ours.get_config() == theirs.get_config() and repr(ours) == repr(theirs)
    assert mixed_precision.DTypePolicy.from_config(ours.get_config()) == ours


def test_bad_policy_names_say_what_is_valid():
    with pytest.raises(KcompError, match="mixed_bfloat16"):
        mixed_precision.DTypePolicy("mixed_float8")
    with pytest.raises(KcompError, match="dtype"):
        kcomp.layers.Dense(3, dtype=3)


def test_global_policy_is_each_new_layers_default_and_a_layer_may_override_it():
    assert mixed_precision.global_policy().name == "float32"
    mixed_precision.set_global_policy("mixed_bfloat16")
    assert mixed_precision.global_policy() == dtype_policies.dtype_policy() == mixed_precision.Policy("mixed_bfloat16")
    dense, plain = kcomp.layers.Dense(3), kcomp.layers.Dense(3, dtype="float32")
    own = kcomp.layers.Dense(3, dtype=mixed_precision.Policy("mixed_float16"))
    assert (dense.dtype_policy.name, dense.compute_dtype, dense.variable_dtype, dense.dtype) == (
        "mixed_bfloat16", "bfloat16", "float32", "float32")  # Keras: layer.dtype is the variable dtype
    assert plain.compute_dtype == "float32" and own.compute_dtype == "float16"
    x = kcomp.Input((4,))
    assert x.dtype == "float32"  # an Input keeps float32 under a mixed policy, as Keras's
    model = kcomp.Model(x, dense(x))
    assert model.dtype_policy.name == "mixed_bfloat16" and model.outputs[0].dtype == "bfloat16"
    assert [w.dtype for w in dense.weights] == ["float32", "float32"]


def test_mixed_layers_cast_their_weights_and_compute_in_16_bits():
    """In the IR: float32 parameters, each cast to bfloat16 where the layer reads it; the Dense
    matmuls on bfloat16; BatchNormalization on float32 (its input cast up, its statistics read as
    kept), back to bfloat16 after; the float32 softmax layer casts its input up."""
    model = mlp(kcomp, "mixed_bfloat16")
    graph = model.to_graph(False)
    assert {p.dtype for p in graph.params} == {"float32"}
    ops = {n.op: n for n in graph.nodes}
    assert [v.dtype for n in graph.nodes if n.op == "matmul" for v in (*n.inputs, *n.outputs)] == ["bfloat16"] * 6
    assert {v.dtype for v in ops["batch_norm"].inputs} == {"float32"}
    params = {p.id for p in graph.params}
    casts = [n for n in graph.nodes if n.op == "cast" and n.inputs[0].id in params]
    assert sorted(n.inputs[0].name for n in casts) == ["dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel"]
    assert ops["softmax"].inputs[0].dtype == "float32" and graph.outputs[0].dtype == "float32"
    assert 'cast(%input_layer) {dtype="bfloat16"}' in print_graph(graph)


def test_embedding_and_layer_normalization_as_keras_in_mixed_bfloat16():
    """Embedding gathers float32 rows and casts them; LayerNormalization computes in float32 and
    returns bfloat16; predictions agree with Keras's within bfloat16 rounding."""
    def build(lib):
        ids = lib.Input((6,), dtype="int32")
        h = lib.layers.Embedding(11, 8, dtype="mixed_bfloat16")(ids)
        h = lib.layers.LayerNormalization(dtype="mixed_bfloat16")(h)
        h = lib.layers.Dense(4, activation="tanh", dtype="mixed_bfloat16")(h)
        return lib.Model(ids, lib.layers.Flatten(dtype="mixed_bfloat16")(h))

    ours, theirs = twins(build)
    ids = np.random.default_rng(1).integers(0, 11, (9, 6)).astype("int32")
    assert ours.outputs[0].dtype == "bfloat16" and str(theirs.outputs[0].dtype) == "bfloat16"
    np.testing.assert_allclose(ours.predict(ids, verbose=0), theirs.predict(ids, verbose=0), **BF16)
    assert ours.layers[1].embeddings.dtype == "float32"


def test_eager_calls_autocast_too():
    layer = kcomp.layers.Dense(3, dtype="mixed_float16")
    out = layer(np.ones((2, 5), "float32"))
    assert out.dtype == torch.float16 and layer.kernel.value.dtype == torch.float32


# -- configs and files ---------------------------------------------------------------------------
def test_config_round_trip_and_keras_configs():
    layer = kcomp.layers.Dense(3, dtype="mixed_bfloat16")
    config = layer.get_config()
    assert config["dtype"] == "mixed_bfloat16"
    assert kcomp.layers.Dense.from_config(config).dtype_policy.name == "mixed_bfloat16"
    # Keras 3 writes the policy as a serialized DTypePolicy; kcomp reads it.
    keras_config = keras.layers.Dense(3, dtype="mixed_float16").get_config()
    assert keras_config["dtype"]["class_name"] == "DTypePolicy"
    assert kcomp.layers.Dense.from_config(keras_config).dtype_policy.name == "mixed_float16"
    # and the .k text: dense(3, dtype=mixed_bfloat16)

    model = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(3, dtype="mixed_bfloat16"), kcomp.layers.Dense(2)])
    text = model_to_k(model)
    assert "dtype=mixed_bfloat16" in text
    (again,) = load_k_text(text).values()
    assert [layer.dtype_policy.name for layer in again.layers] == ["mixed_bfloat16", "float32"]


def test_keras_archives_keep_the_policies_both_ways(tmp_path):
    x, _ = data()
    ours = mlp(kcomp, "mixed_bfloat16")
    ours.save(tmp_path / "ours.keras")
    with zipfile.ZipFile(tmp_path / "ours.keras") as z:
        layers = json.loads(z.read("config.json"))["config"]["layers"]
    dense = next(entry for entry in layers if entry["class_name"] == "Dense")
    assert dense["config"]["dtype"] == {"module": "keras", "class_name": "DTypePolicy",
                                        "config": {"name": "mixed_bfloat16"}, "registered_name": None}
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    assert [l.dtype_policy.name for l in theirs.layers] == [l.dtype_policy.name for l in ours.layers]
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x, verbose=0), **BF16)
    theirs.save(tmp_path / "theirs.keras")
    again = kcomp.models.load_model(tmp_path / "theirs.keras")
    assert [l.dtype_policy.name for l in again.layers] == [l.dtype_policy.name for l in theirs.layers]
    np.testing.assert_allclose(again.predict(x, verbose=0), ours.predict(x, verbose=0), **BF16)


# -- training ------------------------------------------------------------------------------------
def softmax_dense(lib, policy):
    """A mixed last Dense with a softmax: Keras's softmax in bfloat16, the loss reading it in float32."""
    inp = lib.Input((7,))
    h = lib.layers.Dense(11, activation="tanh", dtype=policy)(inp)
    return lib.Model(inp, lib.layers.Dense(5, activation="softmax", dtype=policy)(h))


@pytest.mark.parametrize("build", [mlp, softmax_dense])
def test_mixed_bfloat16_fit_follows_keras(build):
    """Same model and weights: the losses, accuracies and weights of a few training steps agree with
    Keras's mixed_bfloat16 run within bfloat16 tolerance; weights and Adam's slots stay float32."""
    x, y = data()
    ours, theirs = twins(lambda lib: build(lib, "mixed_bfloat16"), optimizer="adam",
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for _ in range(4):
        np.testing.assert_allclose(ours.train_on_batch(x, y), [float(v) for v in theirs.train_on_batch(x, y)], **BF16)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, **BF16)
    assert {w.dtype for w in ours.weights} == {"float32"}
    assert {s.dtype for slots in ours.optimizer.slots.values() for s in slots} == {torch.float32}
    history = ours.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(history["loss"]))


def _loss_scale_twins(initial_scale, growth, backend="reference"):
    def build(lib):
        return mlp(lib, "mixed_float16")

    ours, theirs = twins(build)
    ours.compile(kcomp.optimizers.LossScaleOptimizer(kcomp.optimizers.Adam(0.01), initial_scale, growth),
                 "sparse_categorical_crossentropy", backend=backend)
    theirs.compile(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01), initial_scale, growth),
                   "sparse_categorical_crossentropy")
    return ours, theirs


def test_loss_scaling_follows_keras_step_by_step():
    """mixed_float16 with Keras's dynamic loss scaling, both libraries step by step: a scale of
    2**24 overflows float16 gradients, so the first steps are skipped (weights, slots and the
    iteration count kept) and halve the scale; then every 2nd good step doubles it."""
    x, y = data()
    ours, theirs = _loss_scale_twins(2.0**24, 2)
    scales = []
    for _ in range(10):
        before = [w.numpy() for w in ours.trainable_weights]
        loss = ours.train_on_batch(x, y)
        their_loss = float(theirs.train_on_batch(x, y))
        opt, their_opt = ours.optimizer, theirs.optimizer
        state = (float(opt.dynamic_scale), int(opt.step_counter), opt.iterations)
        assert state == (float(their_opt.dynamic_scale), int(their_opt.step_counter), int(their_opt.iterations))
        np.testing.assert_allclose(loss, their_loss, rtol=1e-3)
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
        if state[0] < (scales[-1] if scales else 2.0**24):  # a skipped step: nothing trained
            assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, ours.trainable_weights))  # (BN's stats move)
        scales.append(state[0])
    halvings = sum(b == a / 2 for a, b in zip([2.0**24, *scales], scales))
    doublings = sum(b == a * 2 for a, b in zip([2.0**24, *scales], scales))
    assert halvings >= 1 and doublings >= 1, scales


def test_an_overflowing_batch_is_skipped_and_halves_the_scale_then_growth_doubles_it():
    """Keras's rules on our own: a batch whose gradients overflow float16 (inf): the step changes no
    trainable weight or slot and not the iteration count, the scale halves and the good-step count
    restarts; dynamic_growth_steps=3 good steps then double the scale."""
    mixed_precision.set_global_policy("mixed_float16")
    model = kcomp.Sequential([kcomp.Input((7,)), kcomp.layers.Dense(5), kcomp.layers.Dense(3, dtype="float32")])
    model.compile(kcomp.optimizers.LossScaleOptimizer("sgd", initial_scale=64.0, dynamic_growth_steps=3), "mse",
                  backend="reference")
    x, _ = data(8)
    y = np.ones((8, 3), "float32")
    model.train_on_batch(x, y)
    opt = model.optimizer
    assert (float(opt.dynamic_scale), float(opt.step_counter), opt.iterations) == (64.0, 1.0, 1)
    weights = model.get_weights()
    model.train_on_batch(x, y * 1e6)  # its float16 gradients overflow to inf (64 * 2e6 / 24 * |w| > 65504)
    assert (float(opt.dynamic_scale), float(opt.step_counter), opt.iterations) == (32.0, 0.0, 1)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    for step in range(3):
        model.train_on_batch(x, y)
    assert (float(opt.dynamic_scale), float(opt.step_counter), opt.iterations) == (64.0, 0.0, 4)
    assert not all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_compile_wraps_the_optimizer_under_mixed_float16_as_keras():
    mixed_precision.set_global_policy("mixed_float16")
    model = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(2)])
    model.compile("adam", "mse", backend="reference")
    opt = model.optimizer
    assert isinstance(opt, mixed_precision.LossScaleOptimizer) and opt.name == "loss_scale_optimizer"
    assert (opt.initial_scale, opt.dynamic_growth_steps, float(opt.dynamic_scale)) == (2.0**15, 2000, 2.0**15)
    assert opt.inner_optimizer.name == "adam" and opt.learning_rate == pytest.approx(0.001)
    model.compile("adam", "mse", backend="reference", auto_scale_loss=False)
    assert not isinstance(model.optimizer, mixed_precision.LossScaleOptimizer)
    mixed_precision.set_global_policy("mixed_bfloat16")  # bfloat16 has float32's range: no scaling
    other = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(2)])
    other.compile("adam", "mse", backend="reference")
    assert not isinstance(other.optimizer, mixed_precision.LossScaleOptimizer)


def test_loss_scale_optimizer_arguments_as_keras():
    with pytest.raises(KcompError, match="dynamic=False"):
        kcomp.optimizers.LossScaleOptimizer("adam", dynamic=False)
    with pytest.raises(KcompError, match="clipnorm"):
        kcomp.optimizers.LossScaleOptimizer("adam", clipnorm=1.0)
    with pytest.raises(KcompError, match="dynamic_growth_steps"):
        kcomp.optimizers.LossScaleOptimizer("adam", dynamic_growth_steps=0)
    opt = kcomp.optimizers.LossScaleOptimizer(kcomp.optimizers.SGD(0.1), initial_scale=8, dynamic_growth_steps=5)
    config = opt.get_config()
    assert {k: config[k] for k in ("name", "initial_scale", "dynamic_growth_steps")} == {
        "name": "loss_scale_optimizer", "initial_scale": 8.0, "dynamic_growth_steps": 5}
    assert config["inner_optimizer"]["class_name"] == "SGD"
    assert opt.scale_loss(2.0) == 16.0


def test_loss_scaled_models_save_and_load_as_keras_writes_them(tmp_path):
    """A .keras archive of a model with a LossScaleOptimizer holds Keras's layout (the optimizer's
    config with its inner one; its variables: two unused, the good-step count, the scale, then the
    inner optimizer's): Keras loads ours and we load Keras's, scale, count and iterations kept, and
    the next step agrees."""
    mixed_precision.set_global_policy("mixed_float16")
    x, _ = data(8)
    y = np.random.default_rng(2).normal(size=(8, 3)).astype("float32")
    model = kcomp.Sequential([kcomp.Input((7,)), kcomp.layers.Dense(5), kcomp.layers.Dense(3, dtype="float32")])
    model.compile(kcomp.optimizers.LossScaleOptimizer(kcomp.optimizers.Adam(0.01), 2.0**20, 3), "mse", backend="reference")
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)  # 6 steps: the first ones skipped (2**20 overflows)
    state = (float(model.optimizer.dynamic_scale), float(model.optimizer.step_counter), model.optimizer.iterations)
    assert state[0] < 2.0**20 and 1 <= state[2] < 6, state
    model.save(tmp_path / "ours.keras")
    mixed_precision.set_global_policy("float32")
    theirs = keras.saving.load_model(tmp_path / "ours.keras")
    opt = theirs.optimizer
    assert type(opt).__name__ == "LossScaleOptimizer" and opt.dynamic_growth_steps == 3
    assert (float(opt.dynamic_scale), int(opt.step_counter), int(opt.iterations)) == state
    again = kcomp.models.load_model(tmp_path / "ours.keras")
    assert (float(again.optimizer.dynamic_scale), float(again.optimizer.step_counter), again.optimizer.iterations) == state
    np.testing.assert_allclose(again.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), rtol=1e-3)
    theirs.save(tmp_path / "theirs.keras")
    back = kcomp.models.load_model(tmp_path / "theirs.keras")
    assert (float(back.optimizer.dynamic_scale), float(back.optimizer.step_counter), back.optimizer.iterations) == (
        float(opt.dynamic_scale), int(opt.step_counter), int(opt.iterations))
    for a, b in zip(back.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
