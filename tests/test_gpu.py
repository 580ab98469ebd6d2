"""The examples on a CUDA GPU: their compiled kernels and captured training steps against the reference.

Run by bench/gpu_check.sh with KCOMP_GPU_TESTS=1, after tests/test_gpu_templates.py; skipped
everywhere else. In the rehearsal (KCOMP_GPU_TESTS=1 where there is no CUDA) the same checks
run under Triton's interpreter in IEEE float32 and the CUDA-only parts skip.
"""

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import kcomp
from kcomp import dsl
from kcomp.layers import BatchNormalization, Conv2D, Dense, Input, MaxPooling2D
from kcomp.models import Sequential

pytestmark = pytest.mark.gpu
EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.k"))
ON_GPU = torch.cuda.is_available()
BACKEND = "triton" if ON_GPU else "triton-interpret"


def needs_cuda(why: str) -> None:
    if not ON_GPU:
        pytest.skip(f"{why} needs a CUDA GPU (checked by the real GPU run)")


# Examples too big for the interpreter within the rehearsal's time (cifar_augment's 32x32x3 training
# step took 502 s under it): the real GPU run checks them; their templates (the conv with a rescale
# prologue, affine_transform, the separable convs) run under the interpreter in tests/gpu_cases.py.
REHEARSAL_SKIPS = {"cifar_augment"}


def needs_cuda_for_size(path) -> None:
    if path.stem in REHEARSAL_SKIPS:
        needs_cuda(f"{path.name} at its size under the interpreter")


LOADED = {path: dsl.load(path) for path in EXAMPLES}
MODELS = [pytest.param(path, name, id=f"{path.stem}.{name}") for path, models in LOADED.items() for name in models]
TRAINABLE = [pytest.param(path, name, id=f"{path.stem}.{name}") for path, models in LOADED.items()
             for name, model in models.items() if model.compile_config.settings]


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


def example_targets(model, loss: str, batch, rng):
    """Targets of the kind the compile section's loss reads (one-hot, class ids or 0/1)."""
    classes = model.outputs[0].shape[-1]
    ids = rng.integers(0, max(classes, 2), batch)
    if loss == "categorical_crossentropy":
        return np.eye(classes, dtype="float32")[ids]
    if loss == "binary_crossentropy":
        return ids.reshape(batch, 1).astype("float32")
    return ids


@pytest.mark.parametrize("precision, tol", [("ieee", 1e-4), ("tf32", 2e-2)])
@pytest.mark.parametrize("path, name", MODELS)
def test_examples_predict_as_the_reference(path, name, precision, tol):
    if precision != "ieee":
        needs_cuda(precision)
    needs_cuda_for_size(path)
    model = dsl.load(path)[name]
    x = example_input(model, 37, np.random.default_rng(0))
    model.compile(backend="reference")
    want = model.predict(x, batch_size=37, verbose=0)
    model.compile(backend=BACKEND, precision=precision)
    got = model.predict(x, batch_size=37, verbose=0)
    for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def assert_weights_follow(got, want, learning_rate=1e-3):
    """Trained weights as the reference's: each within one learning rate (the most one step of Adam
    or RMSprop moves a weight, about), and all but 0.5% of them within rtol 1e-3, atol 1e-4.

    Why not all within 1e-4: Adam moves a weight by lr * g / (|g| + 1e-7), so a gradient of the
    size of epsilon moves it by lr * g / 1e-7, and float32 sums in another order change such a
    gradient by about 1e-8, its update by 1e-4. cifar_augment's first conv has such a weight
    ([0, 0, 1, 14]: its first update was 5.4e-5, the median 3.4e-4, on the reference executor): on
    the H200 it ended 1.7e-4 from the reference's (2026-12-04), the other 863 within 1e-4. A wrong
    gradient moves every weight it reaches by up to a learning rate a step, in more than 0.5% of them."""
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=learning_rate)
        loose = ~np.isclose(a, b, rtol=1e-3, atol=1e-4)
        assert loose.mean() <= 0.005, f"{int(loose.sum())} of {a.size} weights differ by more than 1e-4 (+ 1e-3 relative)"


@pytest.mark.parametrize("path, name", TRAINABLE)
def test_examples_training_steps_as_the_reference_step(path, name):
    """Each example's compile section, two epochs of fit on 37 samples (batches of 16, 16, 5): the
    compiled step gives the reference step's losses and weights; on a GPU each batch shape's step
    is one captured CUDA graph."""
    needs_cuda_for_size(path)
    rng = np.random.default_rng(4)
    runs = {}
    for backend in ("reference", BACKEND):
        kcomp.utils.set_random_seed(2)
        model = dsl.load(path)[name]
        settings = model.compile_config.settings
        if not runs:
            x, y = example_input(model, 37, rng), example_targets(model, settings["loss"], 37, rng)
        model.compile(optimizer=settings.get("optimizer", "rmsprop"), loss=settings["loss"],
                      metrics=settings.get("metrics"), backend=backend, precision="ieee")
        history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        runs[backend] = (history.history["loss"], model.get_weights(), model)
    (ref_loss, ref_w, _), (got_loss, got_w, model) = runs["reference"], runs[BACKEND]
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-3)
    assert_weights_follow(got_w, ref_w)
    if ON_GPU:
        (step,) = [s for (kind, *_), s in model._training.steps.items() if kind == "train"]
        assert len(step.runner.captured) == 2  # batches of 16 and the last 5
        assert all(c.graph is not None for c in step.runner.captured.values())
        assert model.layers[0].weights[0].value.is_cuda


def test_a_data_parallel_job_of_one_trains_its_fused_step_as_without_a_distribution():
    """The fused data-parallel step (kcomp/distribution/fused_step.py: its gradient sums and a
    synchronized BatchNormalization's as all_reduce nodes in the step graph), captured per batch
    shape on a GPU: in a job of one its sums are the identity, so it trains as the plain step."""
    from kcomp import distribution

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(21, 12)).astype("float32"), rng.integers(0, 4, 21)

    def trained(parallel: bool):
        kcomp.utils.set_random_seed(2)
        model = Sequential([Input(shape=(12,)), Dense(16, activation="relu"), BatchNormalization(synchronized=True),
                            Dense(4, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=BACKEND, precision="ieee")
        with distribution.DataParallel().scope() if parallel else contextlib.nullcontext():
            history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        return model, history

    (alone, alone_history), (job, job_history) = trained(False), trained(True)
    (step,) = [s for (kind, *_), s in job._training.steps.items() if kind == "train"]
    assert type(step.runner).__name__ == "FusedDataParallelStep" and step.runner.all_reduces > 0
    if ON_GPU:
        captured = step.runner._device_step.captured
        assert len(captured) == 2 and all(c.graph is not None for c in captured.values())  # batches of 8 and 5
    for key, values in alone_history.items():
        np.testing.assert_allclose(job_history[key], values, rtol=1e-5, err_msg=key)
    for a, b in zip(alone.get_weights(), job.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_cuda_graphs_are_captured_per_batch_shape_and_redone_when_weights_change():
    needs_cuda("CUDA graphs")
    model = Sequential([Input(shape=(8, 8, 3)), Conv2D(5, 3, padding="same", activation="relu"), BatchNormalization(),
                        MaxPooling2D(), Dense(7)])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 8, 8, 3)).astype("float32")
    model.compile(backend="reference")
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
    needs_cuda("bfloat16")
    model = Sequential([Input(shape=(64,), dtype="bfloat16"), Dense(96, activation="gelu", dtype="bfloat16")])
    x = torch.randn(33, 64).to(torch.bfloat16)
    model.compile(backend="reference")
    want = model.predict(x, verbose=0)
    model.compile(backend="triton")
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got.astype("float32"), want.astype("float32"), rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("dtype, precision, tol", [("bfloat16", "tf32", 2e-2), ("float32", "tf32", 1e-2), ("float32", "ieee", 1e-4)])
def test_the_tma_matmul_kernel_on_the_gpu(dtype, precision, tol):
    """kernels/matmul.py's TMA tiles (tried by autotuning at large shapes on compute capability 9.0
    and later), each launched itself at a ragged shape, against float64."""
    needs_cuda("the TMA kernel")
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the TMA kernel needs compute capability 9.0 or later")
    from triton.runtime.errors import OutOfResources

    from kcomp.codegen.module import kernel_source
    from kcomp.kernels.matmul_configs import TMA_CONFIGS
    from kcomp.passes import run_pipeline
    from kcomp.runtime.kernel_cache import load_kernel

    m, k, n = 1000, 520, 776  # no tile size divides them; rows of 16-byte multiples, as a descriptor needs
    model = Sequential([Input(shape=(k,), dtype=dtype), Dense(n, activation="gelu", dtype=dtype)])
    fused, _ = run_pipeline(model.to_graph())
    (node,) = [n_ for n_ in fused.nodes if n_.op == "kernel"]
    module = load_kernel(kernel_source(node, 0))
    t = getattr(torch, dtype)
    x, w, b = (torch.randn(m, k) / k**0.5).to("cuda", t), torch.randn(k, n).to("cuda", t), torch.randn(n).to("cuda", t)
    want = torch.nn.functional.gelu(x.double() @ w.double() + b.double())
    launched = 0
    for config in TMA_CONFIGS:
        try:
            got = module.launch(x, w, b, config=config, precision=precision)
        except OutOfResources:  # float32's larger tiles do not fit shared memory; autotuning skips them too
            continue
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol, msg=lambda text: f"{config}: {text}")
        launched += 1
    assert launched


@pytest.mark.parametrize("precision, tol", [("tf32", 1e-2), ("ieee", 1e-4)])
def test_the_k_major_matmul_configs_on_the_gpu(precision, tol):
    """kernels/matmul_configs.py's KMAJOR tiles (tried by autotuning for large float32 products),
    each launched itself at a ragged shape on a row-major weight and on a column-major one, against
    float64; the TMA form on compute capability 9.0 and later."""
    needs_cuda("the K-major matmul configs")
    from triton.runtime.errors import OutOfResources

    from kcomp.codegen.module import kernel_source
    from kcomp.kernels.matmul_configs import KMAJOR_CONFIGS, KMAJOR_TMA_CONFIGS
    from kcomp.passes import run_pipeline
    from kcomp.runtime.kernel_cache import load_kernel

    m, k, n = 1000, 520, 776
    fused, _ = run_pipeline(Sequential([Input(shape=(k,)), Dense(n, activation="relu")]).to_graph())
    (node,) = [n_ for n_ in fused.nodes if n_.op == "kernel"]
    module = load_kernel(kernel_source(node, 0))
    x, w, b = (torch.randn(m, k) / k**0.5).cuda(), torch.randn(k, n).cuda(), torch.randn(n).cuda()
    want = torch.relu(x.double() @ w.double() + b.double())
    configs = KMAJOR_CONFIGS + (KMAJOR_TMA_CONFIGS if torch.cuda.get_device_capability()[0] >= 9 else [])
    launched = 0
    for config in configs:
        for weight in (w, w.t().contiguous().t()):
            try:
                got = module.launch(x, weight, b, config=config, precision=precision)
            except OutOfResources:
                continue
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol, msg=lambda text: f"{config}: {text}")
            launched += 1
    assert launched >= 2 * len(KMAJOR_CONFIGS)


def test_the_k_major_conv_configs_on_the_gpu():
    """kernels/conv2d.py's KMAJOR tiles (float32 convs on a K-major copy of their kernel), each
    launched itself on the CNN's second conv + pool at a ragged batch, against float64 (TF32)."""
    needs_cuda("the K-major conv configs")
    from kcomp.codegen.module import kernel_source
    from kcomp.kernels import conv2d
    from kcomp.passes import run_pipeline
    from kcomp.runtime.kernel_cache import load_kernel

    model = Sequential([Input(shape=(13, 13, 32)), Conv2D(64, 3, activation="relu"), MaxPooling2D()])
    fused, _ = run_pipeline(model.to_graph())
    (node,) = [n_ for n_ in fused.nodes if n_.op == "kernel"]
    module = load_kernel(kernel_source(node, 0))
    x, w, b = torch.randn(37, 13, 13, 32).cuda(), (torch.randn(3, 3, 32, 64) / 17).cuda(), torch.randn(64).cuda()
    conv = torch.nn.functional.conv2d(x.double().permute(0, 3, 1, 2), w.double().permute(3, 2, 0, 1), b.double())
    want = torch.nn.functional.max_pool2d(torch.relu(conv), 2).permute(0, 2, 3, 1)
    tiles = conv2d.candidate_configs(37 * 25, 64, 288, False, pool=True)[:conv2d.KMAJOR_TILES]
    for config in [dict(c, KMAJOR=True) for c in tiles]:
        got = module.launch(x, w, b, config=config, precision="tf32")
        torch.testing.assert_close(got.double(), want, rtol=1e-2, atol=1e-2, msg=lambda text: f"{config}: {text}")


def test_the_tiled_lstm_scan_stepwise_and_autotuned_on_the_gpu(monkeypatch):
    """kernels/recurrent_tiled.py's scan at 256 units, batch 32: autotuned (its stepwise tiles timed
    replayed from CUDA graphs, autotune's graph_timed; with autotuning on where gpu_check turns it
    off) and each stepwise tile launched itself, against one whole-sequence launch of the same blocks."""
    needs_cuda("stepwise scans and their graph-timed autotuning")
    monkeypatch.setenv("KCOMP_AUTOTUNE", "1")
    from kcomp.codegen.module import kernel_source
    from kcomp.ir.builder import GraphBuilder
    from kcomp.kernels import recurrent_tiled
    from kcomp.passes import run_pipeline
    from kcomp.runtime.kernel_cache import load_kernel

    batch, steps, units = 32, 40, 256
    b = GraphBuilder("scan")
    xw, u = b.input((batch, steps, 4 * units), "float32", "xw"), b.input((units, 4 * units), "float32", "recurrent")
    fused, _ = run_pipeline(b.finish(list(b.emit("lstm_scan", [xw, u], save=True))))
    (node,) = [n for n in fused.nodes if n.op == "kernel"]
    assert node.attrs["template"] == "lstm_scan_tiled"
    module = load_kernel(kernel_source(node, 0))
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(batch, steps, 4 * units, generator=g).cuda(), (torch.randn(units, 4 * units, generator=g) / 16).cuda()]
    tuned = module.launch(*inputs, precision="ieee")
    for config in recurrent_tiled.tile_configs(recurrent_tiled.STEPWISE_TILES, False):
        whole = module.launch(*inputs, config=config, precision="ieee")
        stepwise = module.launch(*inputs, config=dict(config, STEPWISE=True), precision="ieee")
        for w, s_, t in zip(whole, stepwise, tuned, strict=True):
            torch.testing.assert_close(s_, w, rtol=1e-5, atol=1e-5, msg=lambda text: f"{config}: {text}")
            torch.testing.assert_close(t, w, rtol=1e-4, atol=1e-4)
