"""On a CUDA GPU: the triton executor (compiled kernels, CUDA graphs) against the reference.

Run by bench/gpu_check.sh with KCOMP_GPU_TESTS=1; skipped everywhere else.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from kcomp import dsl
from kcomp.layers import BatchNormalization, Conv2D, Dense, Input, MaxPooling2D
from kcomp.models import Sequential

pytestmark = pytest.mark.gpu
EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.k"))


def example_input(model, batch, rng):
    xs = []
    for t in model.inputs:
        shape = (batch, *[d or 8 for d in t.shape[1:]])
        if t.dtype.startswith("int"):
            high = min(l.input_dim for l in model.layers if hasattr(l, "input_dim"))
            xs.append(rng.integers(0, high, size=shape).astype(t.dtype))
        else:
            xs.append(rng.normal(size=shape).astype("float32"))
    return xs if len(xs) > 1 else xs[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("precision, tol", [("ieee", 1e-4), ("tf32", 2e-2)])
def test_examples_on_the_gpu_match_the_reference(path, precision, tol):
    rng = np.random.default_rng(0)
    for model in dsl.load(path).values():
        x = example_input(model, 37, rng)
        want = model.predict(x, batch_size=37, verbose=0)
        model.compile(backend="triton", precision=precision)
        got = model.predict(x, batch_size=37, verbose=0)
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_cuda_graphs_are_captured_per_batch_shape_and_redone_when_weights_change():
    model = Sequential([Input(shape=(8, 8, 3)), Conv2D(5, 3, padding="same", activation="relu"), BatchNormalization(),
                        MaxPooling2D(), Dense(7)])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 8, 8, 3)).astype("float32")
    want = model.predict(x, verbose=0)
    model.compile(backend="triton", precision="ieee")
    executor = model.executor()
    np.testing.assert_allclose(model.predict(x, batch_size=6, verbose=0), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict(x, batch_size=6, verbose=0), want, rtol=1e-4, atol=1e-4)
    assert len(executor._graphs) == 1
    model.predict(x[:4], batch_size=4, verbose=0)
    assert len(executor._graphs) == 2
    bn = model.layers[1]
    bn.set_weights([w * 1.5 + 0.1 for w in bn.get_weights()])
    got = model.predict(x, batch_size=6, verbose=0)
    model.compile(backend="reference")
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_bfloat16_dense_on_the_gpu():
    model = Sequential([Input(shape=(64,), dtype="bfloat16"), Dense(96, activation="gelu", dtype="bfloat16")])
    x = torch.randn(33, 64).to(torch.bfloat16)
    want = model.predict(x.float().to(torch.bfloat16), verbose=0)
    model.compile(backend="triton")
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got.astype("float32"), want.astype("float32"), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_training_steps_on_the_gpu_match_the_reference_and_replay_one_cuda_graph(kind):
    """fit on the triton backend: each step replayed from a captured CUDA graph (one per batch
    shape: the last, partial batch gets its own), the weights updated in place on the device,
    and the same losses and weights as the reference executor."""
    import kcomp
    from kcomp.layers import Dropout, Flatten

    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(2)
        if kind == "mlp":
            layers = [Input(shape=(20,)), Dense(16, activation="relu"), Dropout(0.2, seed=3), Dense(4, activation="softmax")]
        else:
            layers = [Input(shape=(9, 9, 2)), Conv2D(4, 3, activation="relu"), MaxPooling2D(), Flatten(),
                      Dense(4, activation="softmax")]
        return Sequential(layers)

    rng = np.random.default_rng(5)
    x = rng.normal(size=(70, 20) if kind == "mlp" else (70, 9, 9, 2)).astype("float32")
    y = rng.integers(0, 4, 70)
    runs = {}
    for backend in ("reference", "triton"):
        model = make()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      backend=backend, precision="ieee")
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0, shuffle=False)
        runs[backend] = (history.history["loss"], model.get_weights(), model)
    (ref_loss, ref_w, _), (gpu_loss, gpu_w, model) = runs["reference"], runs["triton"]
    np.testing.assert_allclose(gpu_loss, ref_loss, rtol=1e-3)
    for a, b in zip(gpu_w, ref_w):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    (step,) = [s for (k, *_), s in model._training.steps.items() if k == "train"]
    assert len(step.plan.captured) == 2  # batches of 32 and the last 6
    assert all(c.graph is not None for c in step.plan.captured.values())
    assert model.layers[0].weights[0].value.is_cuda
