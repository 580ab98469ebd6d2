"""The SimpleRNN scan kernels with a mask (kernels/recurrent_simple_rnn.py, masked=True): each
against its reference under Triton's interpreter with pre-padded, post-padded, holed and fully
masked rows, tanh and relu; the masked backward reference against torch.autograd in float64;
the decomposed training step of masked layers against the whole masked ops; and a compiled
Embedding(mask_zero=True) -> SimpleRNN model against the reference executor and Keras 3."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan_simple_rnn import simple_rnn_scan_grad_reference, simple_rnn_scan_reference
from kcomp.errors import ShapeError
from kernel_helpers import (
    assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, assert_launch_matches_reference,
    kernels_of, with_nonfinite,
)
from recurrent_cases import assert_decomposed_step_equals_the_whole_ops, recurrent_model
from test_kernels_recurrent_masks import BATCH, MASKED_VARIANTS, MASKS, TIME, UNITS, _gradients, _ids, _mask
from tolerances import tolerance

ACTIVATIONS = ["tanh", "relu"]


def _scan_inputs(g, mask, dtype=torch.float32):
    """xw, U (scaled by units ** -0.5: the state neither dies nor grows), the mask."""
    return (torch.randn(BATCH, TIME, UNITS, generator=g, dtype=dtype),
            torch.randn(UNITS, UNITS, generator=g, dtype=dtype) * UNITS ** -0.5, _mask(mask, dtype))


def _check_kernel(graph, inputs, template):
    """The fused plan against the reference, then its one kernel launched into NaN-poisoned outputs
    (every element written); returns the plan's run."""
    run = assert_compiled_matches_reference(graph, inputs, kind="accumulating", precision="ieee")
    (kernel,) = kernels_of(run.fused)
    assert kernel.attrs["template"] == template
    assert_launch_matches_reference(graph, kernel, inputs, kind="accumulating", precision="ieee")
    return run


def _scan_graph(activation):
    b = GraphBuilder("scan")
    xw, u = b.input((BATCH, TIME, UNITS), "float32", "xw"), b.input((UNITS, UNITS), "float32", "recurrent")
    m = b.input((BATCH, TIME), "float32", "mask")
    return b.finish([b.emit1("simple_rnn_scan", [xw, u, m], activation=activation, masked=True)])


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_scan_kernel_with_a_mask_matches_the_reference(mask, activation):
    inputs = list(_scan_inputs(torch.Generator().manual_seed(3), mask))
    run = _check_kernel(_scan_graph(activation), inputs, "simple_rnn_scan")
    (h_seq,) = run.want
    for row, steps in enumerate(MASKS[mask]):  # a masked step repeats the state before it (zeros at first)
        for t, read in enumerate(steps):
            before = h_seq[row, t - 1] if t else torch.zeros(UNITS)
            assert torch.equal(h_seq[row, t], before) != bool(read)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("has, activation", [((True, True), "tanh"), ((False, True), "relu"), ((True, False), "relu")])
def test_scan_grad_kernel_with_a_mask_matches_the_reference(mask, has, activation):
    g = torch.Generator().manual_seed(7)
    xw, recurrent, m = _scan_inputs(g, mask)
    h_seq = simple_rnn_scan_reference(xw, recurrent, m, activation=activation, masked=True)
    given = [v for v in _gradients(g, has, ((BATCH, TIME, UNITS), (BATCH, UNITS))) if v is not None]
    b = GraphBuilder("scan_grad")
    names = ("recurrent", "h_seq", "mask", *(f"d{i}" for i in range(len(given))))
    vs = [b.input(tuple(v.shape), "float32", name) for v, name in zip((recurrent, h_seq, m, *given), names)]
    graph = b.finish([b.emit1("simple_rnn_scan_grad", vs, activation=activation, has_dseq=has[0], has_dh=has[1],
                              masked=True)])
    _check_kernel(graph, [recurrent, h_seq, m, *given], "simple_rnn_scan_grad")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_masked_scan_kernel_carries_nan_and_inf_as_the_reference(activation):
    """NaN and +-inf in the projected inputs: at a read step they spread through h @ U, at a masked
    one the kept h drops them, in the kernel as in the reference."""
    xw, recurrent, m = _scan_inputs(torch.Generator().manual_seed(4), "holes")
    assert_compiled_matches_reference(_scan_graph(activation), [with_nonfinite(xw), recurrent, m],
                                      kind="accumulating", precision="ieee")


def test_a_mask_that_is_not_one_value_per_row_and_step_is_refused():
    b = GraphBuilder("scan")
    xw, u = b.input((BATCH, TIME, UNITS), "float32", "xw"), b.input((UNITS, UNITS), "float32", "recurrent")
    for mask, masked, message in (((BATCH, TIME + 1), True, "expected one 0/1 value per row and step"),
                                  (None, True, "masked=True, recurrent_masks=False takes 3 inputs, received 2"),
                                  ((BATCH, TIME), False, "masked=False, recurrent_masks=False takes 2 inputs, received 3")):
        given = [b.input(mask, "float32", "mask")] if mask else []
        with pytest.raises(ShapeError, match=message):
            b.emit1("simple_rnn_scan", [xw, u, *given], masked=masked)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_scan_grad_reference_with_a_mask_is_autograd(mask, activation):
    g = torch.Generator().manual_seed(9)
    xw, recurrent, m = _scan_inputs(g, mask, torch.float64)
    d_seq, d_h = _gradients(g, (True, True), ((BATCH, TIME, UNITS), (BATCH, UNITS)), torch.float64)
    xw.requires_grad_(True)
    h_seq = simple_rnn_scan_reference(xw, recurrent, m, activation=activation, masked=True)
    ((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum()).backward()
    dz = simple_rnn_scan_grad_reference(recurrent, h_seq.detach(), m, d_seq, d_h, activation=activation,
                                        has_dseq=True, has_dh=True, masked=True)
    torch.testing.assert_close(dz, xw.grad, rtol=1e-10, atol=1e-10)


# --- the decomposed training step of masked layers --------------------------------------------------

VARIANTS = [*MASKED_VARIANTS, dict(masking=True, activation="relu", return_sequences=True, go_backwards=True)]


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_decomposed_masked_simple_rnn_step_equals_the_whole_ops(variant):
    layers = 2 if variant.get("bidirectional") else 1
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.SimpleRNN, variant)(),
                                                       "simple_rnn", layers=layers, padding=True)
    assert all(n.attrs["masked"] for n in step.nodes if n.op.startswith("simple_rnn_scan"))


IDS = np.array([[0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 0, 0, 0], [4, 0, 2, 9, 0, 3, 0], [0] * TIME], "int32")


def _embedding_simple_rnn(lib, activation="tanh", go_backwards=False, return_sequences=False):
    inp = lib.layers.Input(shape=(TIME,), dtype="int32")
    seq = lib.layers.Embedding(10, 5, mask_zero=True)(inp)
    out = lib.layers.SimpleRNN(UNITS, activation=activation, go_backwards=go_backwards,
                               return_sequences=return_sequences)(seq)
    if return_sequences:
        out = lib.layers.GlobalAveragePooling1D()(out)  # reads the mask: the masked steps' outputs do not count
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(out))


def _scan_templates(model) -> list:
    (step,) = model._training.steps.values()
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and "simple_rnn" in i.node.op]
    return [k.node.attrs["template"] for k in step.runner.plan.kernels if "simple_rnn" in k.node.attrs["template"]]


@pytest.mark.parametrize("activation, go_backwards", [("tanh", False), ("relu", True)])
def test_compiled_masked_training_steps_run_the_scans_and_match_the_reference(activation, go_backwards):
    """Embedding(mask_zero=True) -> SimpleRNN -> Dense on triton-interpret: the masked simple_rnn
    runs as the two scan kernels (no coarse op), with the reference's losses and weights."""
    def make():
        kcomp.utils.set_random_seed(3)
        return _embedding_simple_rnn(kcomp, activation, go_backwards)

    y = kcomp.utils.to_categorical(np.array([0, 1, 2, 1]), 3)
    assert_compiled_steps_match_the_reference(make, IDS, y, steps=2)
    model = make()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(IDS, y)
    assert _scan_templates(model) == ["simple_rnn_scan", "simple_rnn_scan_grad"]


def test_compiled_masked_training_step_is_keras():
    """Keras 3 side by side, the generated kernels on kcomp's side: the same predictions, loss and
    weights after an SGD step (weights moved off their initial values first)."""
    from keras_oracle import keras, twins

    def build(lib):
        return _embedding_simple_rnn(lib, "relu", go_backwards=True, return_sequences=True)

    rng = np.random.default_rng(8)
    y = rng.normal(size=(len(IDS), 3)).astype("float32")
    ours, theirs = twins(build)
    ours.set_weights([(0.5 * rng.normal(size=w.shape)).astype("float32") for w in ours.get_weights()])
    theirs.set_weights(ours.get_weights())
    ours.compile(optimizer=kcomp.optimizers.SGD(0.5), loss="mse", backend="triton-interpret")
    theirs.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    tol = tolerance("float32", "long")
    np.testing.assert_allclose(ours.predict(IDS, verbose=0), theirs.predict(IDS, verbose=0), **tol)
    np.testing.assert_allclose(ours.train_on_batch(IDS, y), float(theirs.train_on_batch(IDS, y)), **tol)
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **tol, err_msg=w.path)
    assert _scan_templates(ours) == ["simple_rnn_scan", "simple_rnn_scan_grad"]
