"""The softmax cross-entropy template under Triton's interpreter, against the reference.

One kernel computes Keras's categorical cross-entropy of softmax probabilities
and, in a training step, its gradient with respect to the logits: the fusion
pass merges the loss and its gradient when the gradient's per-row factor does
not depend on the loss. Labels are one-hot/soft rows or class ids; rows are
ragged and some span several blocks.
"""

import pytest
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE
from kcomp.runtime.plan import Plan
from kcomp.runtime.reference import run_reference

from kernel_helpers import (
    INF, NAN, assert_compiled_matches_reference, assert_launch_matches_reference, assert_matches_reference, kernels_of,
)

# Each loss, gradient element and hit is a few operations of one row's probabilities and label.
KIND = "elementwise"


def probabilities(rows, classes, seed, lead=()):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(*lead, rows, classes, generator=g) * 4, dim=-1)
    p.view(-1, classes)[0, 0] = 1e-12  # below Keras's clip at 1e-7
    return p


def labels_for(p, sparse, seed):
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(0, p.shape[-1], p.shape[:-1], generator=g)
    if sparse:
        return ids.to(torch.int32)
    return torch.nn.functional.one_hot(ids, p.shape[-1]).float()


def xent_graph(p, y, parts):
    b = GraphBuilder("xent")
    lead = (None,) + tuple(p.shape[1:-1])
    probs = b.input((*lead, p.shape[-1]), "float32", "probs")
    labels = b.input(tuple(lead) + (() if not y.is_floating_point() else (p.shape[-1],)), str(y.dtype).split(".")[1], "labels")
    g = b.input(lead, "float32", "g")
    outs = []
    if "loss" in parts:
        outs.append(b.emit1("softmax_cross_entropy", [probs, labels]))
    if "grad" in parts:
        outs.append(b.emit1("softmax_cross_entropy_grad", [probs, labels, g]))
    if "correct" in parts:
        kind = "categorical" if y.is_floating_point() else "sparse_categorical"
        outs.append(b.emit1("correct", [labels, probs], kind=kind))
    return b.finish(outs)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("classes", [10, 37, 300])
@pytest.mark.parametrize("parts", [("loss", "grad"), ("loss",), ("grad",), ("loss", "grad", "correct"), ("loss", "correct")])
def test_loss_and_gradient_in_one_kernel(sparse, classes, parts):
    p = probabilities(13, classes, seed=classes)
    y = labels_for(p, sparse, seed=classes)
    g = torch.randn(13, generator=torch.Generator().manual_seed(3))
    if "correct" in parts:  # ties: the first of two equal largest probabilities counts, as torch's argmax
        p[1, :2] = p[1].max() + 0.1
        p[1] /= p[1].sum()
    fused = assert_compiled_matches_reference(xent_graph(p, y, parts), [p, y, g], kind=KIND).fused
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "softmax_xent" and len(kernel.outputs) == len(parts)


def test_outputs_are_written_whole():
    """Launched directly into NaN-filled buffers: every element of both outputs is written."""
    p = probabilities(29, 19, seed=5, lead=(3,))  # rank 3: rows are (3 * 29)
    y = labels_for(p, sparse=True, seed=5)
    g = torch.randn(3, 29)
    graph = xent_graph(p.transpose(0, 1), y.transpose(0, 1), ("loss", "grad"))  # (None=29, 3, C)
    p, y, g = p.transpose(0, 1).contiguous(), y.transpose(0, 1).contiguous(), g.transpose(0, 1).contiguous()
    (kernel,) = kernels_of(run_pipeline(graph)[0])
    loss, dlogits = assert_launch_matches_reference(graph, kernel, [p, y, g], kind=KIND)
    assert loss.shape == (29, 3) and dlogits.shape == (29, 3, 19)


def test_a_gradient_factor_computed_from_the_loss_keeps_two_kernels():
    """g = loss itself (not Keras's reductions): merging would need the loss before it exists."""
    p = probabilities(7, 5, seed=1)
    y = labels_for(p, sparse=False, seed=1)
    b = GraphBuilder("xent")
    probs = b.input((None, 5), "float32", "probs")
    labels = b.input((None, 5), "float32", "labels")
    loss = b.emit1("softmax_cross_entropy", [probs, labels])
    grad = b.emit1("softmax_cross_entropy_grad", [probs, labels, loss])
    graph = b.finish([loss, grad])
    fused = assert_compiled_matches_reference(graph, [p, y], kind=KIND).fused
    assert [len(k.outputs) for k in kernels_of(fused)] == [1, 1]


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "sparse_categorical_crossentropy"])
def test_training_step_computes_the_loss_and_its_gradient_in_one_kernel(loss):
    """Dense(softmax) + cross-entropy: the loss and d/d logits are one kernel, next to the
    Dense+softmax kernel; no 1/p and no softmax backward anywhere in the step."""

    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential
    from kcomp.training.step import build_train_step

    model = Sequential([Input(shape=(6,)), Dense(4, activation="softmax")])
    model.compile(optimizer="sgd", loss=loss, metrics=["accuracy"])
    target = ((4,), "float32") if loss.startswith("categorical") else ((), "int32")
    step = build_train_step(model, model._training, [target])
    fused, _ = run_pipeline(step.graph, passes=STEP_PIPELINE)
    xent = [k for k in kernels_of(fused) if k.attrs["template"] == "softmax_xent"]
    assert len(xent) == 1
    assert {n.op for n in xent[0].attrs["body"].nodes} == {"softmax_cross_entropy", "softmax_cross_entropy_grad", "correct"}
    ops = {n.op for k in kernels_of(fused) for n in k.attrs["body"].nodes} | {n.op for n in fused.nodes}
    assert "div" not in {n.op for n in step.graph.nodes if n.origin.startswith("dense")}
    assert "one_hot" not in ops and "log" not in ops



@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("parts", [("loss", "grad", "correct"), ("grad",)])
def test_nan_and_inf_pass_on_as_in_the_reference(sparse, parts):
    """Probabilities of a model whose weights went to NaN: the loss is NaN, not Keras's clip
    value -log(1e-7) = 16.118 (Triton's minimum / maximum had dropped the NaN), and the gradient
    and accuracy follow the reference (torch's argmax takes the first NaN as the largest)."""
    p = probabilities(13, 37, seed=4)
    p[1, 3] = NAN  # one NaN in a row
    p[2, :] = NAN  # a whole row
    p[3, 7] = INF
    p[4, 0], p[4, 9] = INF, NAN  # an inf before a NaN: argmax is the NaN
    p[5, 12] = -INF
    y = labels_for(p, sparse, seed=4)
    for row, label in ((1, 3), (4, 9)):  # the NaN's class: a hit for torch's argmax
        y[row] = label if sparse else torch.nn.functional.one_hot(torch.tensor(label), 37).float()
    g = torch.randn(13, generator=torch.Generator().manual_seed(3))
    g[6] = NAN  # the gradient arriving at one row's loss
    graph = xent_graph(p, y, parts)
    fused = assert_compiled_matches_reference(graph, [p, y, g], kind=KIND, float64_reference=True).fused
    assert [k.attrs["template"] for k in kernels_of(fused)] == ["softmax_xent"]


@pytest.mark.parametrize("parts", [("loss", "grad", "correct"), ("grad",)])
def test_a_class_id_out_of_range_gives_nan_not_a_loss_of_zero(parts):
    """The reference refuses class ids outside [0, classes); the kernel cannot raise, and a label
    that selects no class had trained at loss 0.0. Its row's loss and gradient are NaN (a miss for
    accuracy); the other rows are the reference's."""
    p = probabilities(13, 10, seed=6)
    y = labels_for(p, sparse=True, seed=6)
    g = torch.randn(13, generator=torch.Generator().manual_seed(3))
    graph = xent_graph(p, y, parts)
    fused, _ = run_pipeline(graph)
    want = run_reference(graph, [p, y, g], {})
    bad = y.clone()
    bad[[2, 7, 12]] = torch.tensor([-1, 10, 1000], dtype=torch.int32)
    got = Plan(fused).run([p, bad, g], {})
    rows = torch.tensor([i not in (2, 7, 12) for i in range(13)])
    for name, a, b in zip(parts, got, want, strict=True):
        if name == "correct":
            assert (a[~rows] == 0).all()
        else:
            assert a[~rows].isnan().all() and not a[rows].isnan().any()
        assert_matches_reference([a[rows]], [b[rows]], kind=KIND)
