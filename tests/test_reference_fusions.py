"""The reference executor's schedule (kcomp.runtime.reference): dead nodes dropped, FUSIONS' pairs
run as one torch call, max_pool2d's argmax kept for max_pool2d_grad (kcomp.ir.saved_forwards).

Each check runs the same graph on the schedule and node by node (kcomp.ir.interpret.run_graph,
every op's own reference) on fresh random inputs at ragged sizes, and the gradients in float64
against torch.autograd through plain torch ops; NaN and inf go through as torch's own do.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kcomp.ir import saved_forwards
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.interpret import run_graph
from kcomp.ir.ops.conv import window_pads
from kcomp.ir.ops.conv_grad import conv2d_backprop_both
from kcomp.passes.autodiff import gradients
from kcomp.runtime.reference import ReferenceRun, run_reference, schedule

# (image H, W, channels in, filters, kernel, strides, padding, groups): "same" with an even kernel
# and with strides 2 pads unevenly (Keras puts the extra pixel after), which torch cannot say.
GEOMETRIES = [
    (9, 11, 3, 5, (3, 3), (1, 1), "valid", 1),
    (9, 11, 3, 5, (3, 3), (1, 1), "same", 1),
    (10, 7, 4, 6, (2, 4), (2, 1), "same", 2),
    (11, 9, 2, 3, (3, 2), (2, 2), "valid", 1),
]


def conv_block_graph(n, h, w, cin, cout, kernel, strides, padding, groups, dtype, extra_output=False):
    """loss = sum(max_pool2d(relu(bias_add(conv2d(x, k), bias))) * c); outputs d loss / d (k, bias),
    the loss, and with extra_output the conv's own output (so it cannot be fused with its bias)."""
    b = GraphBuilder("conv_block")
    x = b.input((n, h, w, cin), dtype, "x")
    k = b.input((*kernel, cin // groups, cout), dtype, "k")
    bias = b.input((cout,), dtype, "bias")
    conv = b.emit1("conv2d", [x, k], strides=strides, padding=padding, groups=groups)
    act = b.emit1("relu", [b.emit1("bias_add", [conv, bias])])
    pooled = b.emit1("max_pool2d", [act], pool_size=(2, 2), strides=(2, 2), padding="same")
    c = b.input(pooled.shape, dtype, "c")
    loss = b.emit1("sum", [b.emit1("mul", [pooled, c])])
    dk, dbias = gradients(b, loss, [k, bias])
    return b.finish([dk, dbias, loss, *([conv] if extra_output else [])]), (x, k, bias, c)


def random_inputs(graph, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(v.shape, generator=g, dtype=dtype) for v in graph.inputs]


def torch_conv_block(x, k, bias, c, strides, padding, groups):
    """The same loss in plain torch on NCHW copies, Keras's padding made explicit."""
    pads = window_pads(x.shape[1:3], k.shape[:2], strides, (1, 1), padding)
    (top, bottom), (left, right) = pads
    xn = F.pad(x.permute(0, 3, 1, 2).contiguous(), (left, right, top, bottom))
    y = F.relu(F.conv2d(xn, k.permute(3, 2, 0, 1), bias, stride=strides, groups=groups))
    (top, bottom), (left, right) = window_pads(y.shape[2:], (2, 2), (2, 2), (1, 1), "same")
    pooled = F.max_pool2d(F.pad(y, (left, right, top, bottom), value=float("-inf")), 2, 2)
    return (pooled.permute(0, 2, 3, 1) * c).sum()


def step_names(graph):
    return [getattr(fn, "__name__", "") for fn, *_ in schedule(graph)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}-{g[4]}-s{g[5]}-{g[6]}-g{g[7]}")
def test_conv_block_fused_matches_node_by_node_and_autograd(geometry):
    h, w, cin, cout, kernel, strides, padding, groups = geometry
    graph, _ = conv_block_graph(3, h, w, cin, cout, kernel, strides, padding, groups, "float32")
    names = step_names(graph)
    assert "conv2d_with_bias" in names and "_threshold_grad_over_g" in names and "_relu_over_input" in names
    assert "conv2d_backprop_input" not in " ".join(names)  # x's gradient: nothing reads it
    inputs = random_inputs(graph, seed=sum(geometry[:4]))
    got = run_reference(graph, inputs, {})
    want = run_graph(graph, inputs, {})
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)

    graph64, _ = conv_block_graph(3, h, w, cin, cout, kernel, strides, padding, groups, "float64")
    x, k, bias, c = (t.double() for t in inputs)
    leaves = [k.clone().requires_grad_(), bias.clone().requires_grad_()]
    loss = torch_conv_block(x, *leaves, c, strides, padding, groups)
    want64 = torch.autograd.grad(loss, leaves)
    got64 = run_reference(graph64, [x, k, bias, c], {})
    for a, b in zip(got64[:2], want64):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got64[2], loss.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[4]}-s{g[5]}-{g[6]}-g{g[7]}")
def test_conv2d_backprop_both_is_the_two_ops(geometry):
    """Both gradients from one convolution backward = conv2d_backprop_input and _filter, in float64."""
    h, w, cin, cout, kernel, strides, padding, groups = geometry
    b = GraphBuilder("conv_grads")
    x = b.input((2, h, w, cin), "float64", "x")
    k = b.input((*kernel, cin // groups, cout), "float64", "k")
    y = b.emit1("conv2d", [x, k], strides=strides, padding=padding, groups=groups)
    c = b.input(y.shape, "float64", "c")
    graph = b.finish(gradients(b, b.emit1("sum", [b.emit1("mul", [y, c])]), [x, k]))
    assert "conv2d_backprop_both" in step_names(graph)
    inputs = random_inputs(graph, seed=7, dtype=torch.float64)
    for a, want in zip(run_reference(graph, inputs, {}), run_graph(graph, inputs, {}), strict=True):
        torch.testing.assert_close(a, want, rtol=1e-12, atol=1e-12)
    dx, dk = conv2d_backprop_both(inputs[2], inputs[1], inputs[0], strides, padding, (1, 1), groups)
    assert dx.shape == inputs[0].shape and dk.shape == inputs[1].shape and dx.is_contiguous()


def test_conv_output_read_elsewhere_is_not_fused():
    graph, _ = conv_block_graph(2, 9, 11, 3, 5, (3, 3), (1, 1), "same", 1, "float32", extra_output=True)
    assert "conv2d_with_bias" not in step_names(graph)
    inputs = random_inputs(graph, seed=3)
    for a, b in zip(run_reference(graph, inputs, {}), run_graph(graph, inputs, {}), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_nan_and_inf_go_through_as_in_torch():
    """NaN and inf in x (through relu, the saved argmax and the mask) and in the cotangent give
    what plain torch gives, bit for bit against the node-by-node run."""
    graph, _ = conv_block_graph(2, 9, 11, 3, 5, (3, 3), (1, 1), "valid", 1, "float64")
    x, k, bias, c = random_inputs(graph, seed=11, dtype=torch.float64)
    x[0, 4, 5, 1] = float("nan")
    x[1, 2, 2, 0] = float("inf")
    c[1, 0, 1, 2] = float("inf")
    got = run_reference(graph, [x, k, bias, c], {})
    want = run_graph(graph, [x, k, bias, c], {})
    leaves = [k.clone().requires_grad_(), bias.clone().requires_grad_()]
    loss = torch_conv_block(x, *leaves, c, (1, 1), "valid", 1)
    ref = torch.autograd.grad(loss, leaves)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    for a, r in zip(got[:2], ref):
        assert torch.equal(torch.isnan(a), torch.isnan(r)) and torch.equal(torch.isinf(a), torch.isinf(r))
    assert torch.isnan(got[0]).any()


def test_max_pool_grad_takes_the_forwards_argmax_and_matches_recomputing():
    """In a run, max_pool2d leaves (padded x, argmax) for max_pool2d_grad on the same x; outside one
    (or on another tensor) the grad finds the argmax again: the same gradient either way, ties and
    NaN included."""
    from kcomp.ir.registry import OPS

    fwd, grad = OPS["max_pool2d"].reference, OPS["max_pool2d_grad"].reference
    attrs = {"pool_size": (3, 2), "strides": (2, 2), "padding": "same"}
    x = torch.randn(2, 7, 9, 3, dtype=torch.float64).round()  # rounding makes ties
    x[0, 3, 3, 1] = float("nan")
    dy = torch.randn(fwd(x, **attrs).shape, dtype=torch.float64)
    recomputed = grad(x, dy, **attrs)
    with saved_forwards.for_run({"max_pool2d"}):
        y = fwd(x, **attrs)
        assert saved_forwards.take_tape("max_pool2d", (x,), attrs) is not None
        fwd(x, **attrs)
        saved = grad(x, dy, **attrs)
        assert saved_forwards.take_tape("max_pool2d", (x,), attrs) is None  # taken by the grad
    leaf = x.clone().requires_grad_()
    (want,) = torch.autograd.grad((OPS["max_pool2d"].reference(leaf, **attrs) * dy).sum(), [leaf])
    assert torch.equal(saved, recomputed) and torch.equal(saved, want)
    assert torch.isnan(y).any()


def test_dead_nodes_do_not_run_and_a_run_is_reusable():
    b = GraphBuilder("dead")
    x = b.input((None, 4), "float32", "x")
    b.emit1("exponential", [x])  # read by nothing
    out = b.emit1("mul", [x, x])
    graph = b.finish([out])
    run = ReferenceRun(graph)
    assert len(run.steps) == 1
    for seed in (1, 2):
        x_t = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(run([x_t], {})[0], x_t * x_t, rtol=0, atol=0)


def test_mask_mul_fusion_is_bitwise():
    """g * greater(a, 0) in two passes: the same bits as the two ops, with NaN and inf in g and a."""
    b = GraphBuilder("mask")
    a = b.input((None, 5, 3), "float32", "a")
    g = b.input((None, 5, 3), "float32", "g")
    zero = b.emit1("constant", [], value=0.0, dtype="float32")
    graph = b.finish([b.emit1("mul", [g, b.emit1("greater", [a, zero])])])
    assert "_mul_by_mask" in step_names(graph)
    rng = np.random.default_rng(5)
    a_t = torch.as_tensor(rng.standard_normal((4, 5, 3)), dtype=torch.float32)
    g_t = torch.as_tensor(rng.standard_normal((4, 5, 3)), dtype=torch.float32)
    a_t[0, 0, :] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    g_t[1, 1, :] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    (got,) = run_reference(graph, [a_t, g_t], {})
    (want,) = run_graph(graph, [a_t, g_t], {})
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(got), torch.signbit(want))  # -0.0 where g < 0 is masked
    assert not torch.equal(got, g_t)  # g is a graph input: not written over


def test_relu_and_mask_product_write_over_what_nothing_else_reads():
    """relu(x @ w), (dy @ w.T) * greater(h, 0) and relu's gradient threshold_grad(dy @ w.T, h) write
    over the matmuls' outputs (read once, fresh): the same bits as the ops, NaN and inf included;
    over a value something else reads, never."""
    b = GraphBuilder("over")
    x, w = b.input((None, 5), "float32", "x"), b.input((5, 4), "float32", "w")
    dy, w2 = b.input((None, 3), "float32", "dy"), b.input((3, 4), "float32", "w2")
    zero = b.emit1("constant", [], value=0.0, dtype="float32")
    h = b.emit1("relu", [b.emit1("matmul", [x, w])])
    g = b.emit1("matmul", [dy, w2])
    masked = b.emit1("mul", [g, b.emit1("greater", [h, zero])])
    relu_grad = b.emit1("threshold_grad", [b.emit1("matmul", [dy, w2]), h], threshold=0.0)
    shared = b.emit1("matmul", [x, w])  # read twice: relu may not write over it
    graph = b.finish([masked, relu_grad, b.emit1("relu", [shared]), b.emit1("add", [shared, shared])])
    names = step_names(graph)
    assert names.count("_relu_over_input") == 1 and "_mul_by_mask_over_g" in names and "_threshold_grad_over_g" in names
    rng = torch.Generator().manual_seed(9)
    inputs = [torch.randn(6, 5, generator=rng), torch.randn(5, 4, generator=rng), torch.randn(6, 3, generator=rng),
              torch.randn(3, 4, generator=rng)]
    inputs[0][1, 2] = float("nan")
    inputs[2][2, :] = torch.tensor([float("inf"), -float("inf"), float("nan")])
    for a, want in zip(run_reference(graph, inputs, {}), run_graph(graph, inputs, {}), strict=True):
        torch.testing.assert_close(a, want, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(a), torch.signbit(want))


def test_values_are_released_after_their_last_reader():
    """A run drops each value at the step that reads it last (or makes it, when nothing reads it):
    never a graph input, parameter or output, never one a later step reads; the results unchanged."""
    graph, _ = conv_block_graph(2, 9, 11, 3, 5, (3, 3), (1, 1), "same", 1, "float32")
    run = ReferenceRun(graph)
    kept = {v.id for v in (*graph.inputs, *graph.params, *graph.outputs)}
    released = [vid for dying in run.release for vid in dying]
    assert len(released) == len(set(released)) and not set(released) & kept
    made = {v.id for _, _, _, outs in run.steps for v in outs}
    assert made - kept <= set(released)  # every intermediate is let go of
    for k, dying in enumerate(run.release):
        later = {v.id for _, ins, _, _ in run.steps[k + 1:] for v in ins}
        assert not set(dying) & later
    inputs = random_inputs(graph, seed=13)
    for a, b in zip(run(inputs, {}), run_graph(graph, inputs, {}), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def dropout_graph(rate=0.3, seeds=(5, 5)):
    """loss = sum(dropout_b(dropout_a(x) * w) * c) at a step input; outputs d loss / d (x, w) and the
    loss: each dropout's gradient is a dropout of the same seed, rate and step (its mask)."""
    b = GraphBuilder("dropouts")
    x = b.input((None, 7, 3), "float32", "x")
    w = b.input((7, 3), "float32", "w")
    c = b.input((None, 7, 3), "float32", "c")
    step = b.input((), "float32", "step")
    h = b.emit1("mul", [b.emit1("dropout", [x, step], rate=rate, seed=seeds[0], training=True), w])
    loss = b.emit1("sum", [b.emit1("mul", [b.emit1("dropout", [h, step], rate=rate, seed=seeds[1], training=True), c])])
    return b.finish([*gradients(b, loss, [x, w]), loss])


@pytest.mark.parametrize("seeds", [(5, 5), (5, 8)], ids=["one-seed", "two-seeds"])
def test_dropouts_of_one_mask_draw_it_once(seeds):
    """A dropout and its gradient (same seed, rate, step, shape) share the first's mask: the same bits
    as each drawing its own, NaN and inf in x and in the cotangent included; no mask shared across seeds
    unless the seeds are the same (two dropouts of one seed on same-shaped tensors draw the same mask)."""
    graph = dropout_graph(seeds=seeds)
    names = step_names(graph)
    assert names.count("_dropout_drawing_mask") == (1 if seeds[0] == seeds[1] else 2)
    assert names.count("_dropout_reusing_mask") == (3 if seeds[0] == seeds[1] else 2)
    assert "_dropout" not in names
    g = torch.Generator().manual_seed(21)
    x, w, c = torch.randn(6, 7, 3, generator=g), torch.randn(7, 3, generator=g), torch.randn(6, 7, 3, generator=g)
    x[0, 1, :] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    c[2, 3, :] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    for step in (1.0, 2.0):
        inputs = [x, w, c, torch.tensor(step)]
        got, want = run_reference(graph, inputs, {}), run_graph(graph, inputs, {})
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert (got[0] == 0).any() and any(torch.isnan(t).any() for t in got)  # some dropped; a NaN kept


def _training_step(optimizer):
    """A small model's training step graph (Dense-relu-Dropout-Dense-softmax, sparse cross-entropy),
    its inputs for one batch, and its state by name, from a model compiled on the reference executor."""
    from kcomp.layers import Dense, Dropout, Input
    from kcomp.models import Sequential
    from kcomp.training import loop

    model = Sequential([Input(shape=(6,)), Dense(9, activation="relu"), Dropout(0.25), Dense(4, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", backend="reference")
    g = torch.Generator().manual_seed(17)
    x, y = torch.randn(11, 6, generator=g), torch.randint(0, 4, (11,), generator=g)
    model.fit(x, y, batch_size=11, epochs=1, verbose=0, shuffle=False)  # builds the step and its slots
    ys = loop.targets(model, y)
    step = loop._step(model, model._training, "train", ys)
    data = [*loop.model_inputs(model, x), *ys, loop.sample_weights(11, None, None, ys), torch.tensor(1e-3)]
    state = {name: t.clone() for name, t in model._training.state.read([p.name for p in step.graph.params]).items()}
    first = next(name for name in state if name.endswith("kernel"))
    state[first][2, 0] = float("inf")  # NaN and inf go through the forward, the gradients and the update
    return step, data, state


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"] + [None], ids=["adam", "rmsprop", "others"])
def test_update_over_donated_state_is_the_update(optimizer):
    """A training step whose runner donates its weights and slots updates them in place: three steps
    give the same bits as the op's reference making new tensors (NaN included), and the new weights
    are the old tensors. Adam with AMSGrad and AdamW, RMSprop with momentum and centered, too."""
    from kcomp import optimizers

    chosen = [optimizer] if optimizer else [optimizers.Adam(amsgrad=True), optimizers.AdamW(weight_decay=0.1),
                                            optimizers.RMSprop(momentum=0.5, centered=True)]
    for opt in chosen:
        step, data, state = _training_step(opt)
        donated = {i: name for i, name in enumerate(step.writes) if name}
        fresh, over = ReferenceRun(step.graph), ReferenceRun(step.graph, donated)
        assert [getattr(fn, "__name__", "") for fn, *_ in over.steps][-1] == "_update_over_donated"
        mine = {name: t.clone() for name, t in state.items()}
        theirs = {name: t.clone() for name, t in state.items()}
        for _ in range(3):
            before = dict(mine)
            got, want = over(data, mine), fresh(data, theirs)
            for a, b in zip(got, want, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
            updated = {v.id for v in over.steps[-1][3]}
            for v, name, t in zip(step.graph.outputs, step.writes, got, strict=True):
                assert (t is before[name]) == (v.id in updated)  # the update's: written over, not new
            mine.update({n: t for n, t in zip(step.writes, got) if n})
            theirs.update({n: t for n, t in zip(step.writes, want) if n})
        assert any(torch.isnan(t).any() for t in got)


def test_update_is_not_written_over_memory_another_output_shares():
    """Where a weight's tensor is also another of the run's results (here: the graph returns the
    weight itself), the update makes new tensors, as the op's reference."""
    b = GraphBuilder("shared")
    w, m, v = (b.param(name, (3, 2), "float32", name) for name in ("w", "m", "v"))
    x = b.input((None, 3), "float32", "x")
    lr, count = b.input((), "float32", "lr"), b.input((), "float32", "count")
    loss = b.emit1("sum", [b.emit1("matmul", [x, w])])
    (dw,) = gradients(b, loss, [w])
    new = b.emit("optimizer_update", [w, dw, m, v, lr, count], algorithm="adam", count=1, hyper=())
    graph = b.finish([*new, w])
    run = ReferenceRun(graph, donated={0: "w", 1: "m", 2: "v"})
    assert getattr(run.steps[-1][0], "__name__", "") == "_update_over_donated"
    params = {"w": torch.randn(3, 2), "m": torch.zeros(3, 2), "v": torch.zeros(3, 2)}
    old_w = params["w"].clone()
    out = run([torch.randn(5, 3), torch.tensor(0.1), torch.tensor(1.0)], params)
    assert out[0] is not params["w"] and torch.equal(out[3], old_w) and not torch.equal(out[0], old_w)


@pytest.mark.parametrize("chunk", [7, 1 << 18], ids=["ragged-chunks", "one-chunk"])
def test_mask_product_over_g_in_chunks_is_the_product(monkeypatch, chunk):
    """_mul_by_mask_over_g's mask a chunk at a time (ragged chunks too), a full b, a b that is one value,
    and a transposed a (no chunks): g * greater(a, b) bit for bit, NaN, inf and -0.0 included."""
    from kcomp.runtime import reference_fusions

    monkeypatch.setattr(reference_fusions, "MASK_CHUNK", chunk)
    rng = torch.Generator().manual_seed(4)
    g, a, b_full = (torch.randn(5, 9, 4, generator=rng) for _ in range(3))
    g[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    a[1, 2, :2] = torch.tensor([float("nan"), float("inf")])
    a_t = torch.randn(5, 4, 9, generator=rng).transpose(1, 2)
    for a_, b_ in ((a, torch.tensor(0.0)), (a, b_full), (a_t, torch.tensor(0.25)), (a_t, b_full)):
        want = g * (a_ > b_).to(g.dtype)
        got = reference_fusions._mul_by_mask_over_g(g.clone(), a_, b_)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(torch.signbit(got), torch.signbit(want))
