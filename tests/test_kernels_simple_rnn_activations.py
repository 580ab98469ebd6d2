"""SimpleRNN's scans with an activation whose derivative needs its input (elu, gelu, silu,
hard_sigmoid, selu: scan_activations.saves_pre): the forward saves every step's pre-activation
(save=True) and the backward reads it. The references against torch.autograd in float64; the
kernels (on chip, 6 units; tiled, 70 units in three chunks of the interpreter's 32) against the
references and autograd under the interpreter, with and without a step mask and a recurrent
dropout mask, and with NaN and inf; the decomposed training step against the whole ops
(go_backwards, return_sequences, masking, dropout); compiled training steps that run the two
scans; Keras 3 side by side; the kernels AOT-compiled for sm_90 (slow)."""

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import ArgumentError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan_simple_rnn import simple_rnn_scan_grad_reference, simple_rnn_scan_reference
from kcomp.ir.ops.scan_activations import saves_pre
from kcomp.passes import run_pipeline
from kernel_helpers import kernels_of, launch_kernel, with_nonfinite
from recurrent_cases import (
    FEATURES, PADDING, TIME, assert_compiled_step_runs_the_scans, assert_decomposed_step_equals_the_whole_ops,
    assert_predictions_and_a_step_equal_keras, recurrent_model,
)
from tolerances import tolerance

ACTIVATIONS = ["elu", "gelu", "silu", "hard_sigmoid", "selu"]
BATCH = 3
MASK = [[1, 0, 1, 1, 0, 1, 1], [0] * TIME, [0, 0, 1, 1, 1, 1, 1]]  # holes, a fully masked row, pre-padded
SIZES = [(6, ""), (70, "_tiled")]  # on chip; tiled (the template names' suffix)
SIZE_IDS = ["on-chip", "tiled"]
# (step mask, recurrent dropout mask)
MASKINGS = [(False, False), (True, False), (False, True), (True, True)]
MASKING_IDS = ["plain", "masked", "recurrent-masks", "masked-recurrent-masks"]


def test_these_activations_save_pre_activations():
    assert all(saves_pre(a) for a in ACTIVATIONS)


def _inputs(units, masked, recurrent_masks, seed, dtype=torch.float32):
    """(xw, U, [mask], [recurrent mask], d_seq, d_h): U scaled so that h @ U stays O(1) (elu and selu
    pass positive values on unbounded); the recurrent mask 0 or 1 / (1 - 0.3), as Keras draws it."""
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64)
    recurrent = torch.randn(units, units, generator=g, dtype=torch.float64) * 0.5 / units ** 0.5
    masks = [torch.tensor(MASK, dtype=torch.float64)] if masked else []
    masks += [(torch.rand(BATCH, 1, units, generator=g) >= 0.3).double() / 0.7] if recurrent_masks else []
    grads = torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64), \
        torch.randn(BATCH, units, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (xw, recurrent)], [t.to(dtype) for t in masks], [t.to(dtype) for t in grads]


def _flags(masks, recurrent_masks):
    return dict(masked=len(masks) > int(recurrent_masks), recurrent_masks=recurrent_masks)


def _autograd(activation, xw, recurrent, masks, grads, recurrent_masks):
    """d xw of sum(h_seq d_seq) + sum(h_T d_h), torch.autograd through the forward reference in float64."""
    xw = xw.double().requires_grad_()
    h_seq = simple_rnn_scan_reference(xw, recurrent.double(), *(m.double() for m in masks), activation=activation,
                                      **_flags(masks, recurrent_masks))
    d_seq, d_h = (g.double() for g in grads)
    ((h_seq * d_seq).sum() + (h_seq[:, -1] * d_h).sum()).backward()
    return xw.grad


@pytest.mark.parametrize("masked, recurrent_masks", MASKINGS, ids=MASKING_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_scan_grad_reference_is_autograd_in_float64(activation, masked, recurrent_masks):
    (xw, recurrent), masks, grads = _inputs(6, masked, recurrent_masks, 1, torch.float64)
    flags = _flags(masks, recurrent_masks)
    h_seq, pre = simple_rnn_scan_reference(xw, recurrent, *masks, activation=activation, save=True, **flags)
    dz = simple_rnn_scan_grad_reference(recurrent, h_seq, pre, *masks, *grads, activation=activation, has_dseq=True,
                                        has_dh=True, **flags)
    torch.testing.assert_close(dz, _autograd(activation, xw, recurrent, masks, grads, recurrent_masks),
                               rtol=1e-10, atol=1e-12)


def _graph(name, op, values, **attrs):
    b = GraphBuilder(name)
    vs = [b.input(tuple(v.shape), "float32", f"in{i}") for i, v in enumerate(values)]
    return b.finish(list(b.emit(op, vs, **attrs)))


def _launch(op, template, values, **attrs):
    """The op's one kernel (the `template`) launched alone on values into NaN-poisoned outputs:
    (its outputs, the reference's)."""
    graph = _graph(op, op, values, **attrs)
    (kernel,) = kernels_of(run_pipeline(graph)[0])
    assert kernel.attrs["template"] == template
    return launch_kernel(graph, kernel, values, precision="ieee")


def _scans(activation, units, suffix, values, masks, grads, recurrent_masks):
    """Both kernels launched: the forward (save=True) on values + masks, the backward on its outputs;
    each checked against its reference; returns the backward's dz."""
    tol = tolerance("float32", "accumulating")
    flags = dict(activation=activation, **_flags(masks, recurrent_masks))
    got, want = _launch("simple_rnn_scan", f"simple_rnn_scan{suffix}", [*values, *masks], save=True, **flags)
    for a, b in zip(got, want, strict=True):  # every h_t, every pre-activation
        torch.testing.assert_close(a, b, **tol, equal_nan=True)
    (dz,), (want,) = _launch("simple_rnn_scan_grad", f"simple_rnn_scan_grad{suffix}",
                             [values[1], *got, *masks, *grads], has_dseq=True, has_dh=True, **flags)
    torch.testing.assert_close(dz, want, **tol, equal_nan=True)
    return dz


@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("masked, recurrent_masks", MASKINGS, ids=MASKING_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_scan_kernels_match_the_reference_and_autograd(activation, masked, recurrent_masks, units, suffix):
    """Forward and backward kernels (float32) against the references and the backward against
    torch.autograd through the forward reference in float64."""
    values, masks, grads = _inputs(units, masked, recurrent_masks, 2)
    dz = _scans(activation, units, suffix, values, masks, grads, recurrent_masks)
    torch.testing.assert_close(dz, _autograd(activation, *values, masks, grads, recurrent_masks).float(),
                               **tolerance("float32", "accumulating"))


@pytest.mark.parametrize("units, suffix", SIZES, ids=SIZE_IDS)
@pytest.mark.parametrize("activation", ["elu", "gelu"])
def test_scan_kernels_carry_nan_and_inf_as_the_reference(activation, units, suffix):
    """NaN and +-inf in xw, with a step mask and a recurrent mask: in the saved pre-activations and
    through the backward, as the references carry them."""
    (xw, recurrent), masks, grads = _inputs(units, True, True, 3)
    _scans(activation, units, suffix, [with_nonfinite(xw), recurrent], masks, grads, True)


def test_save_with_an_activation_whose_derivative_reads_its_output_is_refused():
    (xw, recurrent), _, _ = _inputs(6, False, False, 4)
    with pytest.raises(ArgumentError, match="save=True with activation='tanh'"):
        _graph("scan", "simple_rnn_scan", [xw, recurrent], activation="tanh", save=True)


# --- layers ----------------------------------------------------------------------------------------

VARIANTS = [dict(activation="elu"), dict(activation="gelu", return_sequences=True, go_backwards=True),
            dict(activation="silu", masking=True, return_state=True),
            dict(activation="hard_sigmoid", dropout=0.2, recurrent_dropout=0.3, return_sequences=True),
            dict(activation="selu", masking=True, recurrent_dropout=0.3, bidirectional=True)]
VARIANT_IDS = ["elu", "gelu-sequences-backwards", "silu-masked-state", "hard_sigmoid-dropout-sequences",
               "selu-masked-dropout-bidirectional"]


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_decomposed_step_equals_the_whole_ops(variant):
    """The decomposition alone, on the reference executor, against the step with the coarse ops:
    each forward scan saves its pre-activations, shared with its backward (one of each per layer)."""
    layers = 2 if variant.get("bidirectional") else 1
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.SimpleRNN, variant)(),
                                                       "simple_rnn", layers=layers, weight_scale=lambda shape: 0.25,
                                                       padding=bool(variant.get("masking")))
    scans = [n for n in step.nodes if n.op == "simple_rnn_scan"]
    assert all(n.attrs["save"] and len(n.outputs) == 2 for n in scans)
    grads = [n for n in step.nodes if n.op == "simple_rnn_scan_grad"]
    assert {n.inputs[2].id for n in grads} == {n.outputs[1].id for n in scans}  # each reads its forward's


def test_a_forward_graph_saves_nothing():
    model = recurrent_model(kcomp.layers.SimpleRNN, dict(activation="elu"))()
    model.compile(optimizer="sgd", loss="categorical_crossentropy", backend="reference")
    from kcomp.compiler import BuildOptions, build_graphs

    built = build_graphs(model, BuildOptions(train=False), None)
    scans = [n for n in built.fused.nodes if n.op == "kernel" and n.attrs["template"] == "simple_rnn_scan"]
    assert len(scans) == 1 and len(scans[0].outputs) == 1


@pytest.mark.parametrize("flags, units, suffix", [
    (dict(activation="elu", masking=True, recurrent_dropout=0.3, go_backwards=True), 6, ""),
    (dict(activation="gelu", masking=True, dropout=0.2, recurrent_dropout=0.3, return_sequences=True), 70, "_tiled"),
], ids=["elu-masked-dropout-backwards", "gelu70-masked-dropout-sequences"])
def test_compiled_training_steps_run_the_scans(flags, units, suffix):
    """Two Adam steps on triton-interpret equal the reference's, PADDING's steps masked; the
    recurrence in the two scan kernels, no coarse simple_rnn op."""
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(4, TIME, FEATURES)) * np.array(PADDING)[:, :, None]).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_step_runs_the_scans(recurrent_model(kcomp.layers.SimpleRNN, flags, units), x, y,
                                        (f"simple_rnn_scan{suffix}", f"simple_rnn_scan_grad{suffix}"))


def test_compiled_training_step_is_keras():
    """SimpleRNN(activation="elu") on the generated kernels and in Keras 3: the same predictions,
    loss and weights after an Adam step; the recurrence in its two scans."""
    from keras_oracle import keras, twins

    def build(lib):
        inp = lib.layers.Input(shape=(TIME, FEATURES))
        return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(lib.layers.SimpleRNN(6, activation="elu")(inp)))

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, TIME, FEATURES)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    ours, theirs = twins(build)
    ours.compile(optimizer=kcomp.optimizers.Adam(0.05), loss="categorical_crossentropy", backend="triton-interpret")
    theirs.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    assert_predictions_and_a_step_equal_keras(ours, theirs, x, y)
    (step,) = ours._training.steps.values()
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and "simple_rnn" in i.node.op]
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert templates.count("simple_rnn_scan") == 1 and templates.count("simple_rnn_scan_grad") == 1, templates


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

# On chip (the tile loaded once at 32 and 64), tiled above (70: no 16 divides it, the most
# registers). Measured, gelu saving pre-activations (registers forward / backward, unmasked then
# with both masks): 64 / 56, 95 / 80 at 32; 40 / 44, 60 / 54 at 64; 216 / 254, 222 / 215 at 70;
# 90 / 72, 126 / 94 at 128, 256 and 1024; no spills.
AOT_UNITS = [32, 64, 70, 128, 256]


def _aot_templates(units):
    suffix = "_tiled" if units > 64 else ""
    return [f"simple_rnn_scan{suffix}", f"simple_rnn_scan_grad{suffix}"] * 2


def compile_cases(units_list) -> list[dict]:
    """gelu (erf and its derivative, the heaviest hooks) saving pre-activations: without masks, then
    with a step mask and a recurrent dropout mask; one record per kernel."""
    from aot_helpers import graph_kernel_records

    records = []
    for units in units_list:
        b = GraphBuilder("scans")
        xw, u = b.input(("N", 50, units), "float32", "xw"), b.input((units, units), "float32", "recurrent")
        outputs = []
        for masked in (False, True):
            masks = [b.input(("N", 50), "float32", "mask"), b.input(("N", 1, units), "float32", "recurrent_masks")] \
                if masked else []
            flags = dict(activation="gelu", masked=masked, recurrent_masks=masked)
            h_seq, pre = b.emit("simple_rnn_scan", [xw, u, *masks], save=True, **flags)
            outputs += [h_seq, b.emit1("simple_rnn_scan_grad", [u, h_seq, pre, *masks, h_seq], has_dseq=True,
                                       has_dh=False, **flags)]
        records += graph_kernel_records(b.finish(outputs), units=units)
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import assert_compiled_without_spills

    assert_compiled_without_spills(__file__, AOT_UNITS, _aot_templates, tmp_path, timeout=600)


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
