"""Any Keras activation in the recurrence scans (kcomp/ir/ops/scan_activations.py): the scan ops'
references against torch.autograd in float64, the kernels (on chip and tiled) against the
references under the interpreter, their hooks (kcomp/codegen/activation_hooks.py), the
decomposition of layers with such activations, and Keras 3 side by side."""

from pathlib import Path

import numpy as np
import pytest
import torch

import kcomp
from kcomp.codegen.activation_hooks import DEFAULTS, defaults_source
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.recurrent_scan import lstm_scan_grad_reference, lstm_scan_reference
from kcomp.ir.ops.recurrent_scan_gru import gru_scan_grad_reference, gru_scan_reference
from kcomp.ir.ops.recurrent_scan_simple_rnn import simple_rnn_scan_grad_reference, simple_rnn_scan_reference
from kcomp.ir.ops.scan_activations import saves_pre
from kcomp.passes import run_pipeline
from kernel_helpers import (assert_compiled_steps_match_the_reference, assert_launch_matches_reference, kernels_of,
                            launch_kernel, with_nonfinite)
from recurrent_cases import (PADDING, assert_compiled_step_runs_the_scans, assert_decomposed_step_equals_the_whole_ops,
                             assert_predictions_and_a_step_equal_keras, recurrent_model)
from tolerances import tolerance

BATCH, TIME = 3, 5
# (activation, recurrent_activation): each of the brief's six as both, none of them a default
PAIRS = [("relu", "hard_sigmoid"), ("hard_sigmoid", "relu"), ("linear", "elu"), ("elu", "linear"),
         ("gelu", "silu"), ("silu", "gelu")]
PAIR_IDS = ["-".join(p) for p in PAIRS]
# pairs whose derivatives are functions of the outputs, not the defaults: the saved gates are activated
OUTPUT_PAIRS = [("relu", "sigmoid"), ("linear", "softsign")]
KERNEL_PAIRS, KERNEL_PAIR_IDS = PAIRS + OUTPUT_PAIRS, PAIR_IDS + ["-".join(p) for p in OUTPUT_PAIRS]
UNITS = [(6, "on_chip"), (70, "tiled")]  # 70: above the on-chip limit, in three chunks of the interpreter's 32


def test_the_default_hooks_are_what_the_generator_writes():
    root = Path(__file__).resolve().parent.parent
    assert (root / DEFAULTS).read_text() == defaults_source(), "run python -m kcomp.codegen.activation_hooks"


# --- the LSTM's scans ---------------------------------------------------------------------------


def _lstm_inputs(units, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # small enough that unbounded gates (linear, elu: f may pass 1) keep c O(1) over TIME steps
    xw = torch.randn(BATCH, TIME, 4 * units, generator=g, dtype=torch.float64) * 0.5
    recurrent = torch.randn(units, 4 * units, generator=g, dtype=torch.float64) * 0.5 / units ** 0.5
    grads = torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64), \
        *torch.randn(2, BATCH, units, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (xw, recurrent, *grads)]


def _lstm_graph(units, pair, grad: bool):
    """lstm_scan (save=True: every output) or lstm_scan_grad with every gradient, with `pair`."""
    acts = dict(activation=pair[0], recurrent_activation=pair[1])
    b = GraphBuilder("scan")
    if not grad:
        xw = b.input((BATCH, TIME, 4 * units), "float32", "xw")
        u = b.input((units, 4 * units), "float32", "recurrent")
        return b.finish(list(b.emit("lstm_scan", [xw, u], save=True, **acts)))
    shapes = (("recurrent", (units, 4 * units)), ("c_seq", (BATCH, TIME, units)), ("gates", (BATCH, TIME, 4 * units)),
              ("d_seq", (BATCH, TIME, units)), ("d_h", (BATCH, units)), ("d_c", (BATCH, units)))
    inputs = [b.input(shape, "float32", name) for name, shape in shapes]
    return b.finish([b.emit1("lstm_scan_grad", inputs, has_dseq=True, has_dh=True, has_dc=True, **acts)])


def _lstm_autograd(xw, recurrent, d_seq, d_h, d_c, pair):
    """d xw of sum(h_seq d_seq) + sum(h_T d_h) + sum(c_T d_c) by torch.autograd through the reference, in float64."""
    xw = xw.double().requires_grad_()
    h_seq, c_seq, _ = lstm_scan_reference(xw, recurrent.double(), save=True, activation=pair[0],
                                          recurrent_activation=pair[1])
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum() + (c_seq[:, -1] * d_c.double()).sum()).backward()
    return xw.grad


@pytest.mark.parametrize("pair", KERNEL_PAIRS + [("tanh", "sigmoid")], ids=KERNEL_PAIR_IDS + ["defaults"])
def test_lstm_scan_grad_reference_is_autograd_in_float64(pair):
    xw, recurrent, d_seq, d_h, d_c = _lstm_inputs(6, 1, torch.float64)
    _, c_seq, gates = lstm_scan_reference(xw, recurrent, save=True, activation=pair[0], recurrent_activation=pair[1])
    dz = lstm_scan_grad_reference(recurrent, c_seq, gates, d_seq, d_h, d_c, has_dseq=True, has_dh=True, has_dc=True,
                                  activation=pair[0], recurrent_activation=pair[1])
    torch.testing.assert_close(dz, _lstm_autograd(xw, recurrent, d_seq, d_h, d_c, pair), rtol=1e-10, atol=1e-12)


def _only_kernel(graph, template):
    (kernel,) = kernels_of(run_pipeline(graph)[0])
    assert kernel.attrs["template"] == template
    return kernel


def _template(name, where):
    return name if where == "on_chip" else f"{name}_tiled"


@pytest.mark.parametrize("units, where", UNITS, ids=[w for _, w in UNITS])
@pytest.mark.parametrize("pair", KERNEL_PAIRS, ids=KERNEL_PAIR_IDS)
def test_lstm_scan_kernel_matches_the_reference(units, where, pair):
    """Every output (h, c and the saved pre-activations) into NaN-poisoned buffers."""
    graph = _lstm_graph(units, pair, grad=False)
    xw, recurrent, *_ = _lstm_inputs(units, 2)
    got, want = launch_kernel(graph, _only_kernel(graph, _template("lstm_scan", where)), [xw, recurrent],
                              precision="ieee")
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tolerance("float32", "accumulating"))


@pytest.mark.parametrize("units, where", UNITS, ids=[w for _, w in UNITS])
@pytest.mark.parametrize("pair", KERNEL_PAIRS, ids=KERNEL_PAIR_IDS)
def test_lstm_scan_grad_kernel_is_autograd_in_float64(units, where, pair):
    """The kernel's dz (float32) against the reference and against torch.autograd through the
    reference scan in float64."""
    graph = _lstm_graph(units, pair, grad=True)
    xw, recurrent, d_seq, d_h, d_c = _lstm_inputs(units, 3)
    _, c_seq, gates = lstm_scan_reference(xw, recurrent, save=True, activation=pair[0], recurrent_activation=pair[1])
    (dz,), (want,) = launch_kernel(graph, _only_kernel(graph, _template("lstm_scan_grad", where)),
                                   [recurrent, c_seq, gates, d_seq, d_h, d_c], precision="ieee")
    torch.testing.assert_close(dz, want, **tolerance("float32", "accumulating"))
    torch.testing.assert_close(dz, _lstm_autograd(xw, recurrent, d_seq, d_h, d_c, pair).float(),
                               **tolerance("float32", "accumulating"))


# --- layers ------------------------------------------------------------------------------------

FEATURES = 5
LSTM_FLAGS = dict(activation="relu", recurrent_activation="hard_sigmoid")


def _sequence_model(lib, layer, units=6, **flags):
    inp = lib.layers.Input(shape=(7, FEATURES))
    return lib.Model(inp, lib.layers.Dense(3, activation="softmax")(getattr(lib.layers, layer)(units, **flags)(inp)))


@pytest.mark.parametrize("flags", [LSTM_FLAGS, dict(activation="gelu", recurrent_activation="linear",
                                                    return_sequences=True, go_backwards=True)],
                         ids=["relu-hard_sigmoid", "gelu-linear-sequences-backwards"])
def test_decomposed_lstm_step_equals_the_whole_ops(flags):
    # weights small enough that a linear gate (f may pass 1) keeps c O(1) over the steps
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.LSTM, flags)(), "lstm",
                                                       weight_scale=lambda shape: 0.25)
    scans = [n for n in step.nodes if n.op.startswith("lstm_scan")]
    assert all((n.attrs["activation"], n.attrs["recurrent_activation"]) == (flags["activation"],
                                                                            flags["recurrent_activation"]) for n in scans)


def _data(seed=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 7, FEATURES)).astype("float32"), kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)


def test_compiled_lstm_training_steps_match_the_reference():
    def make():
        kcomp.utils.set_random_seed(5)
        return _sequence_model(kcomp, "LSTM", **LSTM_FLAGS)

    assert_compiled_steps_match_the_reference(make, *_data(), steps=2)




# --- the GRU's scans ----------------------------------------------------------------------------

# (pair, reset_after)
GRU_CASES = [(pair, True) for pair in KERNEL_PAIRS] + [(PAIRS[0], False), (PAIRS[4], False), (OUTPUT_PAIRS[0], False)]
GRU_IDS = [f"{'-'.join(pair)}-{'after' if after else 'before'}" for pair, after in GRU_CASES]


def _gru_inputs(units, seed, dtype=torch.float32):
    """xw, U, the recurrent bias, d_seq, d_h (small: see _lstm_inputs)."""
    g = torch.Generator().manual_seed(seed)
    values = (torch.randn(BATCH, TIME, 3 * units, generator=g, dtype=torch.float64) * 0.5,
              torch.randn(units, 3 * units, generator=g, dtype=torch.float64) * 0.5 / units ** 0.5,
              torch.randn(3 * units, generator=g, dtype=torch.float64) * 0.5,
              torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64),
              torch.randn(BATCH, units, generator=g, dtype=torch.float64))
    return [t.to(dtype) for t in values]


def _gru_acts(pair):
    return dict(activation=pair[0], recurrent_activation=pair[1])


def _gru_forward(xw, recurrent, bias, pair, reset_after):
    return gru_scan_reference(xw, recurrent, *([bias] if reset_after else []), reset_after=reset_after, save=True,
                              **_gru_acts(pair))


def _gru_autograd(xw, recurrent, bias, d_seq, d_h, pair, reset_after):
    """(d xw, d bias) of sum(h_seq d_seq) + sum(h_T d_h) by torch.autograd through the reference, in float64."""
    xw, bias = xw.double().requires_grad_(), bias.double().requires_grad_()
    h_seq, _ = _gru_forward(xw, recurrent.double(), bias, pair, reset_after)
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum()).backward()
    return xw.grad, bias.grad


def _gru_grads(outs, reset_after):
    """(d xw, d recurrent bias: the recurrent product's gradient summed) from gru_scan_grad's outputs."""
    return outs[0], outs[1].sum(dim=(0, 1)) if reset_after else None


@pytest.mark.parametrize("pair, reset_after", GRU_CASES + [(("tanh", "sigmoid"), True)], ids=GRU_IDS + ["defaults"])
def test_gru_scan_grad_reference_is_autograd_in_float64(pair, reset_after):
    xw, recurrent, bias, d_seq, d_h = _gru_inputs(6, 1, torch.float64)
    h_seq, saved = _gru_forward(xw, recurrent, bias, pair, reset_after)
    outs = gru_scan_grad_reference(recurrent, h_seq, saved, d_seq, d_h, reset_after=reset_after, has_dseq=True,
                                   has_dh=True, **_gru_acts(pair))
    outs = outs if reset_after else (outs,)
    want = _gru_autograd(xw, recurrent, bias, d_seq, d_h, pair, reset_after)
    for got, expected in zip(_gru_grads(outs, reset_after), want[:1 + int(reset_after)]):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def _gru_graph(units, pair, reset_after, grad: bool):
    b = GraphBuilder("gru")
    acts = _gru_acts(pair)
    if not grad:
        inputs = [b.input((BATCH, TIME, 3 * units), "float32", "xw"), b.input((units, 3 * units), "float32", "recurrent")]
        inputs += [b.input((3 * units,), "float32", "bias")] if reset_after else []
        return b.finish(list(b.emit("gru_scan", inputs, reset_after=reset_after, save=True, **acts)))
    saved = 4 if reset_after else 3
    shapes = (("recurrent", (units, 3 * units)), ("h_seq", (BATCH, TIME, units)),
              ("saved", (BATCH, TIME, saved * units)), ("d_seq", (BATCH, TIME, units)), ("d_h", (BATCH, units)))
    inputs = [b.input(shape, "float32", name) for name, shape in shapes]
    return b.finish(list(b.emit("gru_scan_grad", inputs, reset_after=reset_after, has_dseq=True, has_dh=True, **acts)))


@pytest.mark.parametrize("units, where", UNITS, ids=[w for _, w in UNITS])
@pytest.mark.parametrize("pair, reset_after", GRU_CASES, ids=GRU_IDS)
def test_gru_scan_kernels_match_the_reference_and_autograd(units, where, pair, reset_after):
    """The forward's outputs (every h_t, what it saves) and the backward's (float32) into
    NaN-poisoned buffers, against the references, the backward also against torch.autograd in float64."""
    xw, recurrent, bias, d_seq, d_h = _gru_inputs(units, 2)
    tol = tolerance("float32", "accumulating")
    graph = _gru_graph(units, pair, reset_after, grad=False)
    got, want = launch_kernel(graph, _only_kernel(graph, _template("gru_scan", where)),
                              [xw, recurrent, *([bias] if reset_after else [])], precision="ieee")
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)
    h_seq, saved = want
    graph = _gru_graph(units, pair, reset_after, grad=True)
    got, want = launch_kernel(graph, _only_kernel(graph, _template("gru_scan_grad", where)),
                              [recurrent, h_seq, saved, d_seq, d_h], precision="ieee")
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **tol)
    expected = _gru_autograd(xw, recurrent, bias, d_seq, d_h, pair, reset_after)
    for a, b in zip(_gru_grads(got, reset_after), expected[:1 + int(reset_after)]):
        torch.testing.assert_close(a, b.float(), **tol)


GRU_FLAGS = dict(activation="elu", recurrent_activation="hard_sigmoid")


@pytest.mark.parametrize("flags", [GRU_FLAGS, dict(activation="silu", recurrent_activation="relu", reset_after=False,
                                                   return_sequences=True)],
                         ids=["elu-hard_sigmoid", "silu-relu-before-sequences"])
def test_decomposed_gru_step_equals_the_whole_ops(flags):
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(kcomp.layers.GRU, flags)(), "gru",
                                                       weight_scale=lambda shape: 0.25)
    assert all(n.attrs["activation"] == flags["activation"] for n in step.nodes if n.op.startswith("gru_scan"))


# --- SimpleRNN's scans: the activations whose derivative is a function of their output ---------
# (those whose derivative needs its input, which save pre-activations: test_kernels_simple_rnn_activations.py)

FROM_OUTPUT = ["relu", "linear", "sigmoid", "softsign", "exponential"]  # and tanh (the other tests' default)
FROM_INPUT = ["hard_sigmoid", "elu", "gelu", "silu"]


def test_only_activations_whose_vjp_reads_the_output_save_it():
    assert not saves_pre("tanh", *FROM_OUTPUT)
    assert all(saves_pre(a) for a in FROM_INPUT) and all(saves_pre(*pair) for pair in PAIRS)
    assert not any(saves_pre(*pair) for pair in OUTPUT_PAIRS)


def _simple_rnn_inputs(units, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    values = (torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64) * 0.5,
              torch.randn(units, units, generator=g, dtype=torch.float64) * 0.2 / units ** 0.5,  # exp: h > 0 adds up
              torch.randn(BATCH, TIME, units, generator=g, dtype=torch.float64),
              torch.randn(BATCH, units, generator=g, dtype=torch.float64))
    return [t.to(dtype) for t in values]


def _simple_rnn_autograd(xw, recurrent, d_seq, d_h, activation):
    xw = xw.double().requires_grad_()
    h_seq = simple_rnn_scan_reference(xw, recurrent.double(), activation=activation)
    ((h_seq * d_seq.double()).sum() + (h_seq[:, -1] * d_h.double()).sum()).backward()
    return xw.grad


@pytest.mark.parametrize("activation", FROM_OUTPUT)
def test_simple_rnn_scan_grad_reference_is_autograd_in_float64(activation):
    xw, recurrent, d_seq, d_h = _simple_rnn_inputs(6, 1, torch.float64)
    h_seq = simple_rnn_scan_reference(xw, recurrent, activation=activation)
    dz = simple_rnn_scan_grad_reference(recurrent, h_seq, d_seq, d_h, activation=activation, has_dseq=True, has_dh=True)
    torch.testing.assert_close(dz, _simple_rnn_autograd(xw, recurrent, d_seq, d_h, activation), rtol=1e-10, atol=1e-12)


def _simple_rnn_graph(units, activation, grad: bool):
    b = GraphBuilder("simple_rnn")
    if not grad:
        xw = b.input((BATCH, TIME, units), "float32", "xw")
        return b.finish([b.emit1("simple_rnn_scan", [xw, b.input((units, units), "float32", "recurrent")],
                                 activation=activation)])
    u = b.input((units, units), "float32", "recurrent")
    inputs = [u, b.input((BATCH, TIME, units), "float32", "h_seq"), b.input((BATCH, TIME, units), "float32", "d_seq"),
              b.input((BATCH, units), "float32", "d_h")]
    return b.finish([b.emit1("simple_rnn_scan_grad", inputs, activation=activation, has_dseq=True, has_dh=True)])


@pytest.mark.parametrize("units, where", UNITS, ids=[w for _, w in UNITS])
@pytest.mark.parametrize("activation", FROM_OUTPUT)
def test_simple_rnn_scan_kernels_match_the_reference_and_autograd(units, where, activation):
    xw, recurrent, d_seq, d_h = _simple_rnn_inputs(units, 2)
    tol = tolerance("float32", "accumulating")
    graph = _simple_rnn_graph(units, activation, grad=False)
    (h_seq,), (want,) = launch_kernel(graph, _only_kernel(graph, _template("simple_rnn_scan", where)),
                                      [xw, recurrent], precision="ieee")
    torch.testing.assert_close(h_seq, want, **tol)
    graph = _simple_rnn_graph(units, activation, grad=True)
    (dz,), (want,) = launch_kernel(graph, _only_kernel(graph, _template("simple_rnn_scan_grad", where)),
                                   [recurrent, h_seq, d_seq, d_h], precision="ieee")
    torch.testing.assert_close(dz, want, **tol)
    torch.testing.assert_close(dz, _simple_rnn_autograd(xw, recurrent, d_seq, d_h, activation).float(), **tol)


def test_decomposed_simple_rnn_step_equals_the_whole_ops():
    step = assert_decomposed_step_equals_the_whole_ops(
        recurrent_model(kcomp.layers.SimpleRNN, dict(activation="softsign", return_sequences=True))(), "simple_rnn")
    assert all(n.attrs["activation"] == "softsign" for n in step.nodes if n.op.startswith("simple_rnn_scan"))




# --- with a step mask and recurrent dropout, and NaN and inf ----------------------------------------


@pytest.mark.parametrize("layer, flags, units, scans", [
    (kcomp.layers.LSTM, dict(masking=True, activation="gelu", recurrent_activation="hard_sigmoid", dropout=0.2,
                             recurrent_dropout=0.3), 6, ("lstm_scan", "lstm_scan_grad")),
    (kcomp.layers.GRU, dict(masking=True, activation="elu", recurrent_activation="hard_sigmoid", reset_after=False,
                            go_backwards=True), 70, ("gru_scan_tiled", "gru_scan_grad_tiled")),
], ids=["lstm-masked-dropout-gelu-hard_sigmoid", "gru70-masked-before-backwards-elu-hard_sigmoid"])
def test_masked_compiled_training_steps_run_the_scans(layer, flags, units, scans):
    """Two Adam steps on triton-interpret equal the reference's, PADDING's samples masked, the
    recurrence in the two scans (the LSTM's with its recurrent dropout masks, on chip; the GRU's tiled)."""
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(4, 7, FEATURES)) * np.array(PADDING)[:, :, None]).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 3, 4), 3)
    assert_compiled_step_runs_the_scans(recurrent_model(layer, flags, units), x, y, scans)


@pytest.mark.parametrize("units, where", UNITS, ids=[w for _, w in UNITS])
def test_lstm_scan_kernel_carries_nan_and_inf_as_the_reference(units, where):
    """NaN and +-inf in the projected inputs through relu and hard_sigmoid's hooks (saved
    pre-activations too), in the kernel's chunks as in the reference."""
    graph = _lstm_graph(units, PAIRS[0], grad=False)
    xw, recurrent, *_ = _lstm_inputs(units, 9)
    assert_launch_matches_reference(graph, _only_kernel(graph, _template("lstm_scan", where)),
                                    [with_nonfinite(xw), recurrent], kind="accumulating", precision="ieee")


# --- Keras 3 side by side ----------------------------------------------------------------------


@pytest.mark.parametrize("layer, flags", [("LSTM", LSTM_FLAGS), ("GRU", GRU_FLAGS), ("SimpleRNN", dict(activation="softsign"))],
                         ids=["lstm-relu-hard_sigmoid", "gru-elu-hard_sigmoid", "simple_rnn-softsign"])
def test_compiled_training_step_is_keras(layer, flags):
    """The layer on the generated kernels and in Keras 3: the same predictions, loss and weights
    after an Adam step; the recurrence in its two scans."""
    from keras_oracle import keras, twins

    ours, theirs = twins(lambda lib: _sequence_model(lib, layer, **flags))
    ours.compile(optimizer=kcomp.optimizers.Adam(0.05), loss="categorical_crossentropy", backend="triton-interpret")
    theirs.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    assert_predictions_and_a_step_equal_keras(ours, theirs, *_data(3))
    (step,) = ours._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    scan = {"LSTM": "lstm_scan", "GRU": "gru_scan", "SimpleRNN": "simple_rnn_scan"}[layer]
    assert templates.count(scan) == 1 and templates.count(f"{scan}_grad") == 1, templates


# --- AOT, in a child process without TRITON_INTERPRET (aot_helpers.run_file_as_aot_child) ---------

# (cell, units, activations): on chip (tiles held, and read every step) and tiled (70: no 16 divides
# it, the most registers); gelu's and hard_sigmoid's hooks (erf, exp, their derivatives) with saved
# pre-activations, the heaviest here. Measured (first candidates, registers forward / backward): the
# LSTM 130 / 158 at 32, 242 / 255 at 70 (and 100, 500), 198 / 221 at 256; the GRU 96 / 128 at 32,
# 247 / 232 at 70, 152 / 128 at 256 (recurrent_tiled_gru's save_pre candidate); no spills, also
# with (relu, hard_sigmoid), (elu, linear) at 70, 100, 128 and 500.
AOT_CASES = [("lstm", u, PAIRS[4][::-1]) for u in (32, 64, 70, 256)] \
    + [("gru", u, ("gelu", "hard_sigmoid")) for u in (32, 70, 256)] + [("simple_rnn", u, ("softsign",)) for u in (64, 256)]


def compile_cases(cases) -> list[dict]:
    """Both scans of each case compiled for sm_90: one record per kernel."""
    from aot_helpers import graph_kernel_records

    records = []
    for cell, units, acts in cases:
        gates = {"lstm": 4, "gru": 3, "simple_rnn": 1}[cell]
        attrs = dict(zip(("activation", "recurrent_activation"), acts))
        b = GraphBuilder(cell)
        xw = b.input(("N", 50, gates * units), "float32", "xw")
        u = b.input((units, gates * units), "float32", "recurrent")
        if cell == "lstm":
            h_seq, c_seq, saved = b.emit("lstm_scan", [xw, u], save=True, **attrs)
            grads = [b.emit1("lstm_scan_grad", [u, c_seq, saved, h_seq], has_dseq=True, has_dh=False, has_dc=False,
                             **attrs)]
        elif cell == "gru":
            h_seq, saved = b.emit("gru_scan", [xw, u], reset_after=True, save=True, **attrs)
            grads = list(b.emit("gru_scan_grad", [u, h_seq, saved, h_seq], reset_after=True, has_dseq=True,
                                has_dh=False, **attrs))
        else:
            h_seq = b.emit1("simple_rnn_scan", [xw, u], **attrs)
            grads = [b.emit1("simple_rnn_scan_grad", [u, h_seq, h_seq], has_dseq=True, has_dh=False, **attrs)]
        records += graph_kernel_records(b.finish([h_seq, *grads]), units=units, cell=cell)
    return records


@pytest.mark.slow
def test_kernels_compile_for_sm_90_with_tensor_cores_and_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, AOT_CASES, tmp_path, timeout=900)
    assert len(records) == 2 * len(AOT_CASES)
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r


if __name__ == "__main__":  # the AOT child of aot_helpers.run_file_as_aot_child
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
