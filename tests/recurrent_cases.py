"""Models and checks the recurrence kernels' tests share (test_kernels_recurrent.py: the LSTM's;
test_kernels_recurrent_cells.py: the GRU's and SimpleRNN's)."""

import torch

import kcomp
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import PIPELINE
from kcomp.runtime.reference import run_reference
from tolerances import tolerance

TIME, FEATURES, UNITS = 7, 5, 6  # ragged: no size a block size divides


def recurrent_model(layer_class, variant: dict, units: int = UNITS):
    """make() -> a model of one `layer_class` layer with the variant's flags (and the variant's
    stacked: two layers, the first returning sequences; bidirectional: the layer wrapped; masking:
    a Masking(0.0) layer before, so that the steps PADDING zeroes are masked), every output
    reaching the loss."""
    flags = {k: v for k, v in variant.items() if k not in ("stacked", "bidirectional", "masking")}

    def make():
        kcomp.utils.set_random_seed(5)
        inp = kcomp.layers.Input(shape=(TIME, FEATURES))
        x = kcomp.layers.Masking(0.0)(inp) if variant.get("masking") else inp
        x = layer_class(units, return_sequences=True)(x) if variant.get("stacked") else x
        layer = layer_class(units, **flags)
        out = (kcomp.layers.Bidirectional(layer) if variant.get("bidirectional") else layer)(x)
        if variant.get("return_state"):
            out = kcomp.layers.Concatenate()(out)  # the output and the states reach the loss
        if variant.get("return_sequences"):
            out = kcomp.layers.Flatten()(out)
        return kcomp.Model(inp, kcomp.layers.Dense(3, activation="softmax")(out))

    return make


# Which steps of assert_decomposed_step_equals_the_whole_ops's 4 samples are zeros with padding=True
# (a masking variant masks them): pre-padded, post-padded, holes, every step.
PADDING = [[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0], [1, 0, 1, 1, 0, 1, 0], [0] * TIME]


def assert_compiled_step_runs_the_scans(make_model, x, y, scans: tuple):
    """Two Adam steps of make_model() on triton-interpret equal the reference executor's
    (kernel_helpers.assert_compiled_steps_match_the_reference), and the step runs the recurrence
    in the two `scans` templates (forward, backward), one launch each, no coarse op left to torch
    and no matmul (recurrent dropout's per-gate products are batched matmul kernels)."""
    from kernel_helpers import assert_compiled_steps_match_the_reference

    assert_compiled_steps_match_the_reference(make_model, x, y, steps=2)
    model = make_model()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="triton-interpret")
    model.train_on_batch(x, y)
    (step,) = model._training.steps.values()
    templates = [k.node.attrs["template"] for k in step.runner.plan.kernels]
    assert [templates.count(t) for t in scans] == [1, 1], templates
    cell = scans[0].split("_scan")[0]
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and cell in i.node.op]
    assert not [i for i in step.runner.plan.instructions if i.kind == "torch" and i.node.op == "matmul"]


def assert_decomposed_step_equals_the_whole_ops(model, cell: str, layers: int = 1, weight_scale=lambda shape: 0.5,
                                                padding: bool = False):
    """The decomposition alone (before fusion), run by the reference interpreter, against the
    training step with the whole ops (`cell` and `cell`_grad) on random weights (each scaled by
    weight_scale(its shape)): one scan and one scan gradient per layer (each forward scan shared
    with its backward), the same numbers; returns the decomposed step. The learning rate is
    large so that a wrong gradient shows in the updated weights. padding: the samples' steps
    PADDING marks are zeros."""
    from kcomp.compiler import train_step_graph

    model.compile(optimizer=kcomp.optimizers.SGD(learning_rate=10.0), loss="categorical_crossentropy",
                  backend="reference")
    step = train_step_graph(model)
    decomposed, _ = run_pipeline(step, passes=PIPELINE[:-1])
    ops = [n.op for n in decomposed.nodes]
    assert ops.count(f"{cell}_scan") == layers and ops.count(f"{cell}_scan_grad") == layers, ops
    assert cell not in ops and f"{cell}_grad" not in ops
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, TIME, FEATURES, generator=g)
    inputs = [x * torch.tensor(PADDING, dtype=x.dtype)[:, :, None] if padding else x, torch.softmax(torch.randn(4, 3, generator=g), 1),
              torch.ones(4), torch.tensor(0.1)]
    params = {p.name: torch.randn(p.shape, generator=g) * weight_scale(p.shape) for p in step.params}
    for a, b in zip(run_reference(step, inputs, params), run_reference(decomposed, inputs, params), strict=True):
        torch.testing.assert_close(b, a, **tolerance("float32", "long"))
    return decomposed


def assert_decomposed_masked_step_equals_the_whole_ops(layer_class, cell: str, variant: dict, **options):
    """assert_decomposed_step_equals_the_whole_ops of recurrent_model(layer_class, variant) (a
    masking variant) on PADDING's samples: every scan of the step reads the mask."""
    layers = 2 if variant.get("bidirectional") or variant.get("stacked") else 1
    step = assert_decomposed_step_equals_the_whole_ops(recurrent_model(layer_class, variant, **options)(), cell,
                                                       layers=layers, padding=True)
    assert all(n.attrs["masked"] for n in step.nodes if n.op.startswith(f"{cell}_scan"))
    return step


def assert_predictions_and_a_step_equal_keras(ours, theirs, x, y):
    """Compiled twins (keras_oracle.twins, then each compiled): the same predictions on x, loss on
    one training step on (x, y) and weights after it."""
    import numpy as np

    tol = tolerance("float32", "long")
    np.testing.assert_allclose(ours.predict(x, verbose=0), theirs.predict(x, verbose=0), **tol)
    np.testing.assert_allclose(ours.train_on_batch(x, y), float(theirs.train_on_batch(x, y)), **tol)
    for a, b, w in zip(ours.get_weights(), theirs.get_weights(), ours.weights, strict=True):
        np.testing.assert_allclose(a, b, **tol, err_msg=w.path)
