"""Pads, crops, upsamplings and RepeatVector in compiled plans (issue 15 part 3): each runs as a
kernel (kernels/pad_slice.py, kernels/resize.py, kernels/resize_grad.py) or inside a neighbour's,
in the forward plan and in the training step, never as a torch copy between kernels; the compiled
steps train as the reference does; side by side with Keras 3 where tests/test_image_layers.py does
not already compare (RepeatVector, a chain of them); and the new templates compile for sm_90
without spills."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp import layers
from kcomp.compiler import train_step_graph
from kcomp.ir.cost import launched
from kcomp.passes import run_pipeline

from gpu_cases import image_moves
from kernel_helpers import (
    assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, kernels_of, randomize,
)
from tolerances import tolerance

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RNG = np.random.default_rng(3)

# name -> (input shape, the layer, the templates its forward and its gradient run on)
IMAGE = (5, 7, 3)
SEQ = (9, 3)
MOVES = {
    "zeropad2d": (IMAGE, lambda: layers.ZeroPadding2D(((1, 2), (0, 3))), {"pad_slice"}),
    "zeropad1d": (SEQ, lambda: layers.ZeroPadding1D((2, 1)), {"pad_slice"}),
    "cropping2d": (IMAGE, lambda: layers.Cropping2D(((1, 0), (2, 1))), {"pad_slice"}),
    "cropping1d": (SEQ, lambda: layers.Cropping1D((1, 3)), {"pad_slice"}),
    "upsampling2d-nearest": (IMAGE, lambda: layers.UpSampling2D((2, 3)), {"resize", "resize_grad"}),
    "upsampling2d-bilinear": (IMAGE, lambda: layers.UpSampling2D(2, interpolation="bilinear"), {"resize", "resize_grad"}),
    "upsampling1d": (SEQ, lambda: layers.UpSampling1D(3), {"resize", "resize_grad"}),
    "repeat-vector": ((6,), lambda: layers.RepeatVector(4), {"resize", "resize_grad"}),
}
COPIES = {"pad", "slice", "concat", "reshape", "transpose"}  # data movement a plan could run on torch


def _model(name):
    """Input -> weights (so that a training step has the layer's input gradient) -> the layer ->
    Flatten -> Dense."""
    shape, make, _ = MOVES[name]
    before = {3: layers.Conv2D(2, 1), 2: layers.Conv1D(2, 1), 1: layers.Dense(4)}[len(shape)]
    return kcomp.Sequential([kcomp.Input(shape), before, make(), layers.Flatten(), layers.Dense(2)])


def _torch_ops(fused, layer=None):
    """What a plan of `fused` runs that is no kernel (torch ops and the reshapes torch copies), of
    `layer` (its forward and its gradient) or of every layer."""
    return [n.op for n in launched(fused) if n.op != "kernel"
            and (layer is None or (n.origin or "").split("/")[0] == layer.name)]


def _templates(fused):
    return {k.attrs["template"] for k in kernels_of(fused)}


@pytest.mark.parametrize("name", sorted(MOVES))
def test_forward_and_training_step_run_no_torch_copies(name):
    model = _model(name)
    model.compile(optimizer="sgd", loss="mse", backend="triton-interpret")
    forward, _ = run_pipeline(model.to_graph())
    step, _ = run_pipeline(train_step_graph(model))
    templates, layer = MOVES[name][2], model.layers[1]
    for fused in (forward, step):
        assert _torch_ops(fused, layer) == [] and _torch_ops(forward) == [], name  # the step: a loss's broadcast
        assert not {op for op in _torch_ops(fused)} & COPIES, name
        assert not {n.op for n in fused.nodes} & (COPIES - {"reshape", "transpose"}), name  # views only
    assert templates <= _templates(step) and (templates - {"resize_grad"}) <= _templates(forward)
    assert "resize_grad" not in _templates(forward)


@pytest.mark.parametrize("name", sorted(MOVES))
def test_the_compiled_forward_matches_the_reference(name):
    model = _model(name)
    x = torch.randn(3, *model.inputs[0].shape[1:])
    assert_compiled_matches_reference(model, [x], kind="accumulating")


def test_a_chain_of_them_trains_as_the_reference_with_no_torch_copies():
    """tests/gpu_cases.py's image_moves: an uneven ZeroPadding2D before a conv, a bilinear
    UpSampling2D, a crop with a ReLU after it; two Adam steps compiled against the reference."""
    model = image_moves()
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    step, _ = run_pipeline(train_step_graph(model))
    assert not set(_torch_ops(step)) & COPIES
    crop = [k for k in kernels_of(step) if k.attrs["template"] == "pad_slice" and
            [n.op for n in k.attrs["body"].nodes][-3:] == ["slice", "slice", "relu"]]
    assert crop, "the crop and the ReLU after it are one kernel"
    x = RNG.normal(size=(5, 7, 6, 2)).astype("float32")
    y = np.eye(4, dtype="float32")[RNG.integers(0, 4, 5)]


    def make():
        model = image_moves()
        randomize(model)  # seeded: both runs start from the same weights
        return model

    assert_compiled_steps_match_the_reference(make, x, y)


# -- side by side with Keras 3 ------------------------------------------------------------------


def _step_matches_keras(build, x, y, backend):
    from keras_oracle import keras, twins  # skips where Keras is missing (the GPU machine's environment)

    ours, theirs = twins(build)
    rng = np.random.default_rng(0)
    weights = [(0.5 * rng.normal(size=w.shape)).astype("float32") for w in ours.get_weights()]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    forward, step = tolerance("float32", "accumulating"), tolerance("float32", "long")
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **forward)
    ours.compile(optimizer=kcomp.optimizers.SGD(0.1), loss="mse", backend=backend)
    theirs.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), **step)
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **step, err_msg=w.path)


def _repeat_vector(lib):
    L = lib.layers
    return lib.Sequential([lib.Input((6,)), L.Dense(4), L.RepeatVector(3), L.Conv1D(2, 2), L.Flatten(), L.Dense(2)])


def _chain(lib):
    L = lib.layers
    return lib.Sequential([lib.Input((5, 6, 2)), L.Conv2D(3, 1), L.ZeroPadding2D(((2, 0), (1, 2))), L.ReLU(),
                           L.Cropping2D(((1, 2), (0, 1))), L.UpSampling2D((3, 2), interpolation="bilinear"),
                           L.Conv2D(2, 2), L.UpSampling2D((2, 1)), L.Flatten(), L.Dense(2)])


@pytest.mark.parametrize("backend", ["reference", "triton-interpret"])
@pytest.mark.parametrize("build", [_repeat_vector, _chain], ids=["repeat-vector", "chain"])
def test_predicts_and_trains_as_keras(build, backend):
    x = RNG.normal(size=(4, *build(kcomp).inputs[0].shape[1:])).astype("float32")
    _step_matches_keras(build, x, RNG.normal(size=(4, 2)).astype("float32"), backend)


# -- AOT: the templates compile for sm_90 ---------------------------------------------------------

AOT_CASES = ["forward", "train", "nearest"]


def _nearest_moves():
    """The nearest resize and its gradient (image_moves's are bilinear: another specialisation)."""
    return kcomp.Sequential([kcomp.Input((5, 7, 3)), layers.Conv2D(2, 1), layers.UpSampling2D((2, 3)), layers.Flatten(),
                             layers.Dense(4, activation="softmax")])


def compile_cases(cases):
    """The AOT child's work: image_moves's forward and training-step kernels, and the training step
    of a nearest upsampling, compiled for sm_90."""
    from aot_helpers import graph_kernel_records

    records = []
    for case in cases:
        model = _nearest_moves() if case == "nearest" else image_moves()
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        graph = model.to_graph() if case == "forward" else train_step_graph(model)
        records += graph_kernel_records(graph, case=case)
    return records


@pytest.mark.slow
def test_the_templates_compile_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=600)
    moves = [r for r in records if r["template"] in ("pad_slice", "resize", "resize_grad")]
    assert {(r["case"], r["template"]) for r in moves} == {
        ("forward", "pad_slice"), ("forward", "resize"), ("train", "pad_slice"), ("train", "resize"), ("train", "resize_grad"),
        ("nearest", "resize"), ("nearest", "resize_grad")}
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0, r


if __name__ == "__main__":  # the AOT child: python tests/test_image_moves.py CASES_JSON ANSWER_PATH
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    Path(sys.argv[2]).write_text(json.dumps(compile_cases(json.loads(sys.argv[1]))))
