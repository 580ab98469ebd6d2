"""Piecewise gradients at their kinks and bounds, with inf and NaN in the input and the incoming
gradient, as Keras's torch backend gives them.

torch's backward of relu, relu6, clamp, hardsigmoid, hardswish, elu and maximum selects with
torch.where: a gradient it drops is 0 even where the incoming one is inf or NaN (sqrt(relu(x)) has
a finite gradient at x <= 0 in Keras), and each picks its own side at a kink (relu6 passes nothing
at x = 6, clamp passes everything at its bounds). Each case is checked three ways: against Keras
itself (when installed), against torch.autograd through the op's registry reference, and through
the generated kernels under Triton's interpreter against the reference executor.

Where x itself is NaN torch has no one answer: its vectorized loops and the scalar loop for a
tensor's last few elements differ (relu6's gradient at a NaN x is 0 in one and g in the other).
kcomp gives what the vectorized loops give, the answer for all but a tensor's last few elements:
checked on tensors of NaN alone, whose length is a multiple of any vector width.
"""

import numpy as np
import pytest
import torch

import kcomp
from kcomp import ops
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.interpret import run_graph
from kcomp.passes.autodiff import gradients
from kcomp.runtime.reference import run_reference
from kernel_helpers import assert_compiled_matches_reference

INF, NAN = float("inf"), float("nan")
POINTS = [-INF, -7.0, -3.0, -2.5, -1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.5, 6.0, 7.0, INF, NAN]


def points_and_cotangents():
    """Every point three times: with a finite incoming gradient (exact in float32, as Keras computes
    some of these ops in float32), with inf and with NaN."""
    x = np.array(POINTS * 3)
    n = len(POINTS)
    g = np.concatenate([(np.arange(n) - n / 2) * 0.25 + 0.125, np.full(n, INF), np.full(n, NAN)])
    return x.reshape(3, n), g.reshape(3, n)


# (id, kcomp function of a traced value, Keras function of a torch tensor)
CASES = [
    ("relu", lambda x: kcomp.activations.relu(x), lambda k, x: k.activations.relu(x)),
    ("relu6", lambda x: kcomp.activations.relu6(x), lambda k, x: k.activations.relu6(x)),
    ("relu-max1.5", lambda x: kcomp.activations.relu(x, max_value=1.5), lambda k, x: k.activations.relu(x, max_value=1.5)),
    ("relu-threshold0.5", lambda x: kcomp.activations.relu(x, threshold=0.5),
     lambda k, x: k.activations.relu(x, threshold=0.5)),
    ("relu-threshold-1-max6", lambda x: kcomp.activations.relu(x, threshold=-1.0, max_value=6.0),
     lambda k, x: k.activations.relu(x, threshold=-1.0, max_value=6.0)),
    ("relu-slope0.1", lambda x: kcomp.activations.relu(x, negative_slope=0.1),
     lambda k, x: k.activations.relu(x, negative_slope=0.1)),
    ("relu-slope0.2-max6", lambda x: kcomp.activations.relu(x, negative_slope=0.2, max_value=6.0),
     lambda k, x: k.activations.relu(x, negative_slope=0.2, max_value=6.0)),
    ("relu-slope0.3-max2-threshold0.5", lambda x: kcomp.activations.relu(x, negative_slope=0.3, max_value=2.0, threshold=0.5),
     lambda k, x: k.activations.relu(x, negative_slope=0.3, max_value=2.0, threshold=0.5)),
    ("leaky_relu", lambda x: kcomp.activations.leaky_relu(x), lambda k, x: k.activations.leaky_relu(x)),
    ("hard_sigmoid", lambda x: kcomp.activations.hard_sigmoid(x), lambda k, x: k.activations.hard_sigmoid(x)),
    ("hard_silu", lambda x: kcomp.activations.hard_silu(x), lambda k, x: k.activations.hard_silu(x)),
    ("elu", lambda x: kcomp.activations.elu(x), lambda k, x: k.activations.elu(x)),
    ("selu", lambda x: kcomp.activations.selu(x), lambda k, x: k.activations.selu(x)),
    ("maximum", lambda x: ops.maximum(x, 0.5), lambda k, x: k.ops.maximum(x, 0.5)),
    ("minimum", lambda x: ops.minimum(x, 0.5), lambda k, x: k.ops.minimum(x, 0.5)),
    ("clip", lambda x: ops.clip(x, -1.0, 1.5), lambda k, x: k.ops.clip(x, -1.0, 1.5)),
    ("sqrt-of-relu", lambda x: ops.sqrt(kcomp.activations.relu(x)), lambda k, x: k.ops.sqrt(k.activations.relu(x))),
]
IDS = [case[0] for case in CASES]


def gradient_graph(fn, shape, dtype="float64"):
    """The graph of d sum(fn(x) * g) / dx, inputs (x, g), as kcomp's autodiff builds it."""
    b = GraphBuilder("special_values")
    x = b.input(shape, dtype, "x")
    g = b.input(shape, dtype, "g")
    with ops.tracing(b):
        y = fn(x)
    (dx,) = gradients(b, b.emit1("sum", [b.emit1("mul", [y, g])]), [x])
    return b.finish([dx])


def assert_same(got, want):
    """Equal at every point but x = NaN, NaN and inf included."""
    x = np.asarray(POINTS * 3).reshape(3, len(POINTS))
    got, want = (np.where(np.isnan(x), 0.0, np.asarray(v, dtype=np.float64)) for v in (got, want))
    for name, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        wrong = np.argwhere(test(got) != test(want))
        assert not len(wrong), (f"{name} differs at {len(wrong)} places, first at x = {np.asarray(POINTS * 3)[wrong[0][1]]}: "
                                f"got {got[tuple(wrong[0])]}, want {want[tuple(wrong[0])]}")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)


def kcomp_gradient(fn, x=None, g=None):
    if x is None:
        x, g = points_and_cotangents()
    return run_reference(gradient_graph(fn, x.shape), [torch.tensor(x), torch.tensor(g)], {})[0].numpy()


@pytest.mark.parametrize("ours, theirs", [case[1:] for case in CASES], ids=IDS)
def test_the_gradient_is_keras_at_kinks_and_with_inf_and_nan(ours, theirs):
    keras = pytest.importorskip("keras")
    x, g = points_and_cotangents()
    leaf = torch.tensor(x, requires_grad=True)
    theirs(keras, leaf).backward(torch.tensor(g))
    assert_same(kcomp_gradient(ours), leaf.grad.numpy())


def autograd_through_the_references(fn, x, g):
    b = GraphBuilder("forward")
    xv = b.input(x.shape, "float64", "x")
    with ops.tracing(b):
        graph = b.finish([fn(xv)])
    leaf = torch.tensor(x, requires_grad=True)
    (y,) = run_graph(graph, [leaf], {})  # the ops' references, differentiable by autograd
    y.backward(torch.tensor(g))
    return leaf.grad.numpy()


@pytest.mark.parametrize("ours", [case[1] for case in CASES], ids=IDS)
def test_the_gradient_is_torch_autograd_through_the_references(ours):
    """The same without Keras: torch.autograd through the references of the forward graph's ops."""
    assert_same(kcomp_gradient(ours), autograd_through_the_references(ours, *points_and_cotangents()))


@pytest.mark.parametrize("ours, theirs", [case[1:] for case in CASES], ids=IDS)
def test_at_a_nan_input_the_gradient_is_what_torchs_vectorized_loops_give(ours, theirs):
    x, g = np.full((4, 16), NAN), np.full((4, 16), 2.0)
    got = kcomp_gradient(ours, x, g)
    np.testing.assert_array_equal(got, autograd_through_the_references(ours, x, g))
    keras = pytest.importorskip("keras")
    leaf = torch.tensor(x, requires_grad=True)
    theirs(keras, leaf).backward(torch.tensor(g))
    np.testing.assert_array_equal(got, leaf.grad.numpy())


@pytest.mark.parametrize("ours", [case[1] for case in CASES], ids=IDS)
def test_the_generated_kernels_drop_and_keep_as_the_reference(ours):
    x, g = points_and_cotangents()
    graph = gradient_graph(ours, x.shape, "float32")
    assert_compiled_matches_reference(graph, [torch.tensor(x, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)],
                                      kind="elementwise", float64_reference=True)


def test_sqrt_of_relu_has_a_finite_gradient_where_relu_is_zero():
    """sqrt's gradient is inf at 0; relu's gradient drops it where x <= 0, as torch does (it was NaN)."""
    b = GraphBuilder("sqrt_relu")
    x = b.input((4,), "float64", "x")
    with ops.tracing(b):
        loss = ops.sum(ops.sqrt(kcomp.activations.relu(x)))
    (dx,) = gradients(b, loss, [x])
    got = run_reference(b.finish([dx]), [torch.tensor([-1.0, 0.0, 0.25, 4.0])], {})[0]
    assert got.tolist() == [0.0, 0.0, 1.0, 0.25]


def test_clip_at_its_bounds_passes_the_whole_gradient_as_torch_clamp():
    """Keras's binary cross-entropy clips p to [eps, 1 - eps]: a sigmoid output of exactly 1 - eps
    (float32's 1 - 2**-23) gets the whole gradient there, where a min of a max would give half."""
    b = GraphBuilder("bce")
    p, y = b.input((3,), "float32", "p"), b.input((3,), "float32", "y")
    with ops.tracing(b):
        loss = kcomp.losses.binary_crossentropy(y, p, axis=0)
    (dp,) = gradients(b, loss, [p])
    eps = 1e-7
    p_values = torch.tensor([1.0 - eps, eps, 0.5], dtype=torch.float32)
    got = run_reference(b.finish([dp]), [p_values, torch.ones(3)], {})[0]
    want = -1.0 / p_values / 3  # -y / p, averaged over the 3 values; nothing clipped away at the bounds
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
