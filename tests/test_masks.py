"""Keras's masks side by side with Keras 3: Embedding(mask_zero=True) and Masking make one, the
recurrent layers (every flag), Bidirectional, TimeDistributed, merge layers and the 1-D global
pools read or pass it on, a masked output's loss and metrics are weighed by it; pre- and
post-padded batches give Keras's numbers, on the reference executor and the generated kernels."""

import itertools

import numpy as np
import pytest
import torch

import kcomp
from kcomp import layers as kl
from keras_oracle import assert_logs_close, keras, twins

# Batch 3, time 7: one sequence pre-padded, one post-padded, one with holes, ids below 10.
IDS = np.array([[0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 8, 0, 0, 0], [0, 7, 0, 8, 9, 2, 0]], "int32")
CELLS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}


def _padded_floats(value=0.0):
    """(3, 7, 5) normal floats with whole steps equal to `value` where IDS pads."""
    x = np.random.default_rng(0).normal(size=(3, 7, 5)).astype("float32")
    x[IDS == 0] = value
    return x


def _outputs(result) -> list:
    return list(result) if isinstance(result, (list, tuple)) else [result]


def _assert_predictions_equal(ours, theirs, x, rtol=1e-5, atol=1e-6):
    got, want = _outputs(ours.predict(x, verbose=0)), _outputs(theirs.predict(x, verbose=0))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


RECURRENT_FLAGS = [
    (cell, *flags) for cell in CELLS
    for flags in itertools.product((False, True), (False, True), (False, True), (False, True))
    # go_backwards, return_sequences, return_state, zero_output_for_mask: all for the LSTM, a spread for the others
    if cell == "lstm" or flags in ((False, True, False, False), (True, True, True, True), (True, False, False, True),
                                   (False, False, True, False))
]


@pytest.mark.parametrize("cell, go_backwards, return_sequences, return_state, zero_output", RECURRENT_FLAGS,
                         ids=[f"{c}-back{int(g)}-seq{int(r)}-state{int(s)}-zero{int(z)}" for c, g, r, s, z in RECURRENT_FLAGS])
def test_masked_recurrent_layers_equal_keras(cell, go_backwards, return_sequences, return_state, zero_output):
    def build(lib):
        inp = lib.Input((7,), dtype="int32")
        emb = lib.layers.Embedding(10, 4, mask_zero=True)(inp)
        out = getattr(lib.layers, CELLS[cell])(5, go_backwards=go_backwards, return_sequences=return_sequences,
                                                return_state=return_state, zero_output_for_mask=zero_output)(emb)
        return lib.Model(inp, out)

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, IDS)
    masked = [t.mask_shape for t in ours.outputs]
    assert masked[0] == (("N", 7) if return_sequences else None) and all(m is None for m in masked[1:])


def test_without_a_mask_nothing_changes():
    """The same layer without a mask reads every step (zero_output_for_mask then changes nothing)."""
    def build(lib, mask_zero):
        inp = lib.Input((7,), dtype="int32")
        emb = lib.layers.Embedding(10, 4, mask_zero=mask_zero)(inp)
        return lib.Model(inp, lib.layers.LSTM(5, return_sequences=True, zero_output_for_mask=True)(emb))

    plain, theirs = twins(lambda lib: build(lib, False))
    _assert_predictions_equal(plain, theirs, IDS)
    masked = build(kcomp, True)
    masked.set_weights(plain.get_weights())
    assert not np.allclose(masked.predict(IDS, verbose=0), plain.predict(IDS, verbose=0))


@pytest.mark.parametrize("mask_value", [0.0, -1.0])
def test_masking_layer_equals_keras(mask_value):
    x = _padded_floats(mask_value)
    x[0, 4, 0] = mask_value  # one feature equal to mask_value: the step stays

    def build(lib):
        inp = lib.Input((7, 5))
        masked = lib.layers.Masking(mask_value)(inp)
        seq = lib.layers.GRU(4, return_sequences=True)(masked)
        return lib.Model(inp, [masked, seq, lib.layers.SimpleRNN(3, go_backwards=True)(seq)])

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, x)


def test_a_nested_model_reads_and_passes_on_the_mask():
    def build(lib):
        steps = lib.Input((7, 4))
        inner = lib.Model(steps, lib.layers.Dense(3)(lib.layers.LSTM(5, return_sequences=True)(steps)))
        inp = lib.Input((7,), dtype="int32")
        seq = inner(lib.layers.Embedding(10, 4, mask_zero=True)(inp))
        return lib.Model(inp, [seq, lib.layers.GlobalAveragePooling1D()(seq)])

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, IDS)
    assert [t.mask_shape for t in ours.outputs] == [("N", 7), None]


@pytest.mark.parametrize("merge_mode, return_sequences, return_state", [
    ("concat", True, False), ("sum", False, False), (None, True, True), ("ave", True, True), ("mul", False, True),
])
def test_bidirectional_with_a_mask_equals_keras(merge_mode, return_sequences, return_state):
    def build(lib):
        inp = lib.Input((7,), dtype="int32")
        emb = lib.layers.Embedding(10, 4, mask_zero=True)(inp)
        layer = lib.layers.Bidirectional(lib.layers.LSTM(3, return_sequences=return_sequences, return_state=return_state),
                                         merge_mode=merge_mode)
        return lib.Model(inp, layer(emb))

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, IDS)
    assert (ours.outputs[0].mask_shape is not None) == return_sequences


def test_time_distributed_passes_the_mask_on_and_folds_a_wider_one():
    """TimeDistributed(Dense) keeps a sequence's mask for the next layer; ids (batch, steps, words)
    give a (batch, steps, words) mask that a wrapped LSTM reads step by step, as Keras's does."""
    def build(lib):
        inp = lib.Input((7,), dtype="int32")
        seq = lib.layers.Embedding(10, 4, mask_zero=True)(inp)
        seq = lib.layers.TimeDistributed(lib.layers.Dense(3, activation="tanh"))(seq)
        return lib.Model(inp, lib.layers.LSTM(2, go_backwards=True)(seq))

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, IDS)

    def build_words(lib):
        inp = lib.Input((2, 7), dtype="int32")
        words = lib.layers.Embedding(10, 4, mask_zero=True)(inp)
        return lib.Model(inp, lib.layers.TimeDistributed(lib.layers.GRU(3))(words))

    ours, theirs = twins(build_words)
    _assert_predictions_equal(ours, theirs, np.stack([IDS, IDS[::-1]], axis=1))


MERGES = [("Add", True), ("Average", True), ("Maximum", True), ("Maximum", False), ("Minimum", True), ("Minimum", False),
          ("Multiply", True), ("Multiply", False), ("Concatenate", False), ("Concatenate", True)]


@pytest.mark.parametrize("merge, both_masked", MERGES, ids=[f"{m}-{'both' if b else 'one'}" for m, b in MERGES])
def test_merge_layers_combine_masks_as_keras(merge, both_masked):
    """Two masks of different padding merge (OR; none when an input has none, except for Concatenate,
    which counts that input as unmasked); Maximum, Minimum and Multiply leave masked entries out as Keras's."""
    def build(lib):
        ids = lib.Input((7,), dtype="int32")
        floats = lib.Input((7, 4))
        a = lib.layers.Embedding(10, 4, mask_zero=True)(ids)
        b = lib.layers.Masking(0.0)(floats) if both_masked else lib.layers.Dense(4)(floats)
        merged = getattr(lib.layers, merge)()([a, b])
        return lib.Model([ids, floats], lib.layers.LSTM(3, return_sequences=True)(merged))

    floats = _padded_floats()[..., :4]
    floats[:, 2] = 0.0  # padding the ids do not have
    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, [IDS, floats])


@pytest.mark.parametrize("pool", ["GlobalAveragePooling1D", "GlobalMaxPooling1D"])
def test_global_pools_as_keras(pool):
    """The average leaves masked steps out; the max, as Keras's, reads every step and drops the mask."""
    def build(lib):
        inp = lib.Input((7,), dtype="int32")
        seq = lib.layers.LSTM(4, return_sequences=True)(lib.layers.Embedding(10, 4, mask_zero=True)(inp))
        return lib.Model(inp, getattr(lib.layers, pool)()(seq))

    ours, theirs = twins(build)
    _assert_predictions_equal(ours, theirs, IDS)
    assert ours.outputs[0].mask_shape is None


def _tagger(lib, cell="LSTM", backwards=False):
    """A sequence tagger: its output carries the mask into the loss and the metrics."""
    inp = lib.Input((7,), dtype="int32")
    seq = lib.layers.Embedding(10, 5, mask_zero=True)(inp)
    seq = getattr(lib.layers, cell)(6, return_sequences=True, go_backwards=backwards)(seq)
    return lib.Model(inp, lib.layers.TimeDistributed(lib.layers.Dense(3, activation="softmax"))(seq))


TAGS = np.random.default_rng(1).integers(0, 3, IDS.shape)


def test_the_loss_and_metrics_of_a_masked_pre_padded_batch_equal_keras():
    """Keras's Loss weighs masked steps 0 and divides by the unmasked ones; MeanMetricWrapper
    metrics average over them; RootMeanSquaredError (a Mean) reads every step."""
    ours, theirs = twins(_tagger, optimizer="sgd", loss="sparse_categorical_crossentropy",
                         metrics=lambda lib: ["accuracy", lib.metrics.SparseCategoricalCrossentropy()])
    pre_padded = np.array([[0, 0, 0, 3, 4, 5, 6], [0, 0, 1, 2, 3, 8, 9], [0, 0, 0, 0, 0, 0, 9]], "int32")
    got, want = ours.evaluate(pre_padded, TAGS, verbose=0, return_dict=True), theirs.evaluate(pre_padded, TAGS, verbose=0, return_dict=True)
    assert_logs_close(got, want)
    probabilities = theirs.predict(pre_padded, verbose=0)
    losses = -np.log(np.take_along_axis(probabilities, TAGS[..., None], -1)[..., 0])
    np.testing.assert_allclose(got["loss"], losses[pre_padded != 0].mean(), rtol=1e-5)  # not losses.mean()

    def regression(lib):
        inp = lib.Input((7, 5))
        seq = lib.layers.GRU(2, return_sequences=True)(lib.layers.Masking()(inp))
        return lib.Model(inp, seq)

    ours, theirs = twins(regression, optimizer="sgd", loss="mse", metrics=lambda lib: ["mae", lib.metrics.RootMeanSquaredError()])
    targets = np.random.default_rng(2).normal(size=(3, 7, 2)).astype("float32")
    x = _padded_floats()
    assert_logs_close(ours.evaluate(x, targets, verbose=0, return_dict=True), theirs.evaluate(x, targets, verbose=0, return_dict=True))


@pytest.mark.parametrize("cell, backwards", [("LSTM", False), ("GRU", True), ("SimpleRNN", False)])
def test_training_steps_give_keras_weights(cell, backwards):
    ours, theirs = twins(lambda lib: _tagger(lib, cell, backwards), optimizer="adam",
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    got = ours.fit(IDS, TAGS, batch_size=2, epochs=3, shuffle=False, verbose=0).history
    want = theirs.fit(IDS, TAGS, batch_size=2, epochs=3, shuffle=False, verbose=0).history
    assert_logs_close({k: v[-1] for k, v in got.items()}, {k: v[-1] for k, v in want.items()})
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fit_on_the_generated_kernels_with_a_mask():
    """On triton-interpret the masked recurrent op stays one op (the decompose pass leaves it) and
    the rest runs in the generated kernels: the same training as the reference executor."""
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.utils.set_random_seed(4)
        model = _tagger(kcomp, "LSTM", True)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], backend=backend)
        history = model.fit(IDS, TAGS, batch_size=2, epochs=2, shuffle=False, verbose=0).history
        results.append((history, model.get_weights(), model.predict(IDS, verbose=0)))
    (h_ref, w_ref, p_ref), (h_tri, w_tri, p_tri) = results
    assert_logs_close({k: v[-1] for k, v in h_tri.items()}, {k: v[-1] for k, v in h_ref.items()}, rtol=1e-4)
    for a, b in zip(w_tri, w_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(p_tri, p_ref, rtol=1e-4, atol=1e-6)


def test_the_decompose_pass_splits_a_masked_lstm_and_passes_the_mask_on():
    """A masked lstm (and its lstm_grad) splits as an unmasked one, its scans reading the mask."""
    from kcomp.ir.builder import GraphBuilder
    from kcomp.passes.autodiff import gradients
    from kcomp.passes.decompose import decompose

    for masked in (True, False):
        b = GraphBuilder()
        x, mask = b.input((None, 7, 5), "float32", "x"), b.input((None, 7), "float32", "mask")
        weights = [b.param(k, s, "float32", k) for k, s in (("k", (5, 16)), ("r", (4, 16)), ("b", (16,)))]
        seq = b.emit("lstm", [x, *weights, *([mask] if masked else [])], masked=masked, return_sequences=True)[0]
        loss = b.emit1("sum", [seq])
        graph = decompose(b.finish([loss, *gradients(b, loss, weights)]))
        assert not {"lstm", "lstm_grad"} & {n.op for n in graph.nodes}
        scans = [n for n in graph.nodes if n.op.startswith("lstm_scan")]
        assert len(scans) >= 2 and all(n.attrs["masked"] == masked for n in scans)
        assert all((mask.id in [v.id for v in n.inputs]) == masked for n in scans)


# ---------------------------------------------------------------- the ops: reference and gradients

GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _op_inputs(rng, cell, use_bias=True, reset_after=True, dtype=np.float64):
    units, features = 6, 5
    bias_shape = (2, 3 * units) if cell == "gru" and reset_after else (GATES[cell] * units,)
    inputs = [rng.normal(size=(3, 7, features)), 0.5 * rng.normal(size=(features, GATES[cell] * units)),
              0.5 * rng.normal(size=(units, GATES[cell] * units))] + ([0.5 * rng.normal(size=bias_shape)] if use_bias else [])
    return [x.astype(dtype) for x in inputs] + [(IDS != 0).astype(dtype)]


def _naive(cell, x, kernel, recurrent, bias, mask, attrs):
    """Keras's backend.rnn written out over a cell step written out (Keras's default activations)."""
    order = range(x.shape[1] - 1, -1, -1) if attrs["go_backwards"] else range(x.shape[1])
    units = recurrent.shape[0]
    states = [torch.zeros(x.shape[0], units, dtype=x.dtype) for _ in range(2 if cell == "lstm" else 1)]
    output, outputs = torch.zeros_like(states[0]), []
    for t in order:
        new = _cell_step(cell, x[:, t], kernel, recurrent, bias, states)
        keep = mask[:, t : t + 1] != 0
        output = torch.where(keep, new[0], torch.zeros_like(output) if attrs["zero_output_for_mask"] else output)
        states = [torch.where(keep, n, s) for n, s in zip(new, states)]
        outputs.append(output)
    seq = torch.stack(outputs, 1) if attrs["return_sequences"] else output
    return [seq, *states]


def _cell_step(cell, x_t, kernel, recurrent, bias, states):
    z = x_t @ kernel + (0 if bias is None else (bias[0] if bias.dim() == 2 else bias))
    h = states[0]
    if cell == "lstm":
        i, f, g, o = torch.split(z + h @ recurrent, recurrent.shape[0], -1)
        c = torch.sigmoid(f) * states[1] + torch.sigmoid(i) * torch.tanh(g)
        return [torch.sigmoid(o) * torch.tanh(c), c]
    if cell == "simple_rnn":
        return [torch.tanh(z + h @ recurrent)]
    u = recurrent.shape[0]
    hr = h @ recurrent + (0 if bias is None else bias[1])
    x_z, x_r, x_h = torch.split(z, u, -1)
    h_z, h_r, h_h = torch.split(hr, u, -1)
    zg, r = torch.sigmoid(x_z + h_z), torch.sigmoid(x_r + h_r)
    return [zg * h + (1 - zg) * torch.tanh(x_h + r * h_h)]


OP_FLAGS = [(cell, g, r, z) for cell in CELLS for g, r, z in itertools.product((False, True), repeat=3)]


@pytest.mark.parametrize("cell, go_backwards, return_sequences, zero_output", OP_FLAGS,
                         ids=[f"{c}-back{int(g)}-seq{int(r)}-zero{int(z)}" for c, g, r, z in OP_FLAGS])
def test_masked_op_reference_is_keras_s_loop(cell, go_backwards, return_sequences, zero_output):
    from kcomp.ir.registry import OPS

    rng = np.random.default_rng(hash((cell, go_backwards, return_sequences, zero_output)) % 2**31)
    x, kernel, recurrent, bias, mask = (torch.as_tensor(a) for a in _op_inputs(rng, cell))
    attrs = OPS[cell].resolve_attrs(dict(go_backwards=go_backwards, return_sequences=return_sequences, masked=True,
                                         zero_output_for_mask=zero_output))
    got = OPS[cell].reference(x, kernel, recurrent, bias, mask, **attrs)
    want = _naive(cell, x, kernel, recurrent, bias, mask, attrs)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


VJP_FLAGS = [(cell, *flags) for cell in CELLS for flags in itertools.product((False, True), repeat=4)
             if cell == "lstm" or sum(flags) in (0, 2, 4)]


@pytest.mark.parametrize("cell, go_backwards, return_sequences, zero_output, use_bias", VJP_FLAGS,
                         ids=[f"{c}-back{int(g)}-seq{int(r)}-zero{int(z)}-bias{int(b)}" for c, g, r, z, b in VJP_FLAGS])
def test_masked_op_gradients_equal_autograd_in_float64(cell, go_backwards, return_sequences, zero_output, use_bias):
    from vjp_harness import check_vjp

    rng = np.random.default_rng(7)
    inputs = _op_inputs(rng, cell, use_bias)
    attrs = dict(go_backwards=go_backwards, return_sequences=return_sequences, masked=True,
                 zero_output_for_mask=zero_output, use_bias=use_bias)
    wrt = list(range(len(inputs) - 1))  # not the mask: it has no gradient
    assert check_vjp(cell, inputs, attrs, wrt=wrt) == []


def test_the_masked_grad_op_backs_through_the_forward_tape(monkeypatch):
    """In a training step the masked op's backward takes its forward's tape (the mask in its key)."""
    from kcomp.ir import saved_forwards

    taken = []
    take = saved_forwards.take_tape
    monkeypatch.setattr(saved_forwards, "take_tape", lambda *a: taken.append(take(*a)) or taken[-1])
    model = _tagger(kcomp, "GRU")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", backend="reference")
    model.train_on_batch(IDS, TAGS)
    assert taken and all(t is not None for t in taken)


# ---------------------------------------------------------------- eager calls, metadata, refusals


def test_eager_calls_carry_the_mask_as_keras():
    emb = kl.Embedding(10, 4, mask_zero=True)
    out = emb(IDS)
    np.testing.assert_array_equal(out._keras_mask.numpy(), (IDS != 0).astype("float32"))
    lstm = kl.LSTM(3, return_sequences=True)
    model = kcomp.Sequential([kl.Input((7,), dtype="int32"), emb, lstm])
    np.testing.assert_allclose(lstm(out).numpy(), model.predict(IDS, verbose=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lstm(emb(IDS), mask=IDS != 0).numpy(), lstm(out).numpy())
    assert not np.allclose(kl.LSTM(3, return_sequences=True)(out.detach().clone()).numpy(), lstm(out).numpy())


def test_layers_that_do_not_support_masking_drop_it_with_keras_s_warning():
    x = kcomp.Input((7,), dtype="int32")
    seq = kl.Embedding(10, 4, mask_zero=True)(x)
    assert kl.Dense(3)(seq).mask_shape == ("N", 7)
    with pytest.warns(UserWarning, match="does not support masking"):
        conv = kl.Conv1D(3, 2)(seq)
    assert conv.mask_shape is None
    assert kl.LSTM(2)(seq).mask_shape is None


@pytest.mark.parametrize("case", ["sample_weight", "class_weight", "mask-argument", "softmax", "batch-norm-training"])
def test_refusals_name_the_problem(case):
    model = _tagger(kcomp)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", backend="reference")
    x = kcomp.Input((7,), dtype="int32")
    seq = kl.Embedding(10, 4, mask_zero=True)(x)
    with pytest.raises(kcomp.KcompError) as err:
        if case == "sample_weight":
            model.fit(IDS, TAGS, sample_weight=np.ones(3), verbose=0)
        elif case == "class_weight":
            model.fit(IDS, TAGS, class_weight={0: 1.0, 1: 2.0, 2: 1.0}, verbose=0)
        elif case == "mask-argument":
            kl.LSTM(3)(seq, mask=seq)
        elif case == "softmax":
            kl.Softmax()(seq)
        else:
            bn = kcomp.Model(x, kl.BatchNormalization()(seq))
            bn.compile(optimizer="sgd", loss="mse", backend="reference")
            bn.train_on_batch(IDS, np.zeros((3, 7, 4), "float32"))
    message = str(err.value)
    assert {"sample_weight": "mask", "class_weight": "mask", "mask-argument": "travels with the tensors",
            "softmax": "Softmax", "batch-norm-training": "batch statistics"}[case] in message


# ---------------------------------------------------------------- configs, files, .k text


def _mixed(lib):
    inp = lib.Input((7, 5))
    masked = lib.layers.Masking(mask_value=-1.0)(inp)
    seq = lib.layers.Bidirectional(lib.layers.GRU(3, return_sequences=True))(masked)
    both = lib.layers.Concatenate()([seq, lib.layers.LSTM(2, return_sequences=True, go_backwards=True)(masked)])
    return lib.Model(inp, lib.layers.GlobalAveragePooling1D()(both))


def test_keras_files_with_masks_both_ways(tmp_path):
    """Keras writes the ops its masks came from (not_equal, any) and each call's mask argument into a
    functional config; kcomp reads past them (it makes the same masks) and writes neither."""
    ours, theirs = twins(_mixed)
    x = _padded_floats(-1.0)
    theirs.save(tmp_path / "keras.keras")
    loaded = kcomp.saving.load_model(tmp_path / "keras.keras")
    _assert_predictions_equal(loaded, theirs, x)
    ours.save(tmp_path / "ours.keras")
    _assert_predictions_equal(ours, keras.models.load_model(tmp_path / "ours.keras"), x)
    seq_ours, seq_theirs = twins(lambda lib: lib.Sequential([lib.Input((7,), dtype="int32"),
                                                            lib.layers.Embedding(10, 4, mask_zero=True),
                                                            lib.layers.LSTM(3)]))
    seq_theirs.save(tmp_path / "seq.keras")
    loaded = kcomp.saving.load_model(tmp_path / "seq.keras")
    assert loaded.layers[0].mask_zero
    _assert_predictions_equal(loaded, seq_theirs, IDS)


def test_a_mask_argument_from_a_real_layer_is_still_refused():
    config = twins(_mixed)[1].get_config()
    masking = next(e["name"] for e in config["layers"] if e["class_name"] == "Masking")
    for entry in config["layers"]:
        for node in entry.get("inbound_nodes") or []:
            if "mask" in node.get("kwargs", {}):
                node["kwargs"]["mask"]["config"]["keras_history"] = [masking, 0, 0]
    with pytest.raises(kcomp.KcompError, match="mask"):
        kcomp.Model.from_config(config)


def test_configs_and_k_text_carry_mask_zero_and_masking():
    from kcomp.dsl import loads
    from kcomp.saving.k_text import model_to_k

    emb, masking = kl.Embedding(10, 4, mask_zero=True), kl.Masking(-1.0)
    for layer, keras_cls in ((emb, keras.layers.Embedding), (masking, keras.layers.Masking)):
        again = type(layer).from_config(layer.get_config())
        assert again.get_config() == layer.get_config()
        theirs = keras_cls.from_config(layer.get_config())
        assert type(layer).from_config(theirs.get_config()).get_config()["name"] == layer.name
    assert kl.Embedding.from_config(keras.layers.Embedding(10, 4, mask_zero=True).get_config()).mask_zero
    assert kl.Masking.from_config(keras.layers.Masking(2.5).get_config()).mask_value == 2.5
    text = """
graph padded {
  x = input(7, 5)
  m = masking(x, mask_value=-1.0)
  h = gru(m, 4, return_sequences=true)
  output h
}
model tagger {
  input(7, dtype=int32)
  embedding(10, 4, mask_zero=true)
  lstm(5, return_sequences=true)
}
"""
    models = loads(text)
    assert [m.outputs[0].mask_shape for m in models.values()] == [("N", 7), ("N", 7)]
    for model in models.values():
        written = model_to_k(model)
        assert ("mask_zero=true" in written) or ("mask_value=-1.0" in written), written
        rebuilt = list(loads(written).values())[0]
        rebuilt.set_weights(model.get_weights())
        x = IDS if model.inputs[0].dtype == "int32" else _padded_floats(-1.0)
        np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0))
