"""One optimizer step equals Keras's formula, written out by hand in numpy."""

import math

import numpy as np
import pytest
import torch

from kcomp import optimizers
from kcomp.errors import ArgumentError
from kcomp.ir.builder import GraphBuilder
from kcomp.optimizers import schedules
from kcomp.runtime.reference import run_reference

SHAPES = [(3, 5), (5,)]


def keras_step(name, hyper, p, g, slots, lr, t):
    """Keras 3's update for one parameter (keras/src/optimizers/<name>.py), in numpy float64."""
    p, slots = p.copy(), [s.copy() for s in slots]
    if name == "sgd":
        mom, nesterov = hyper.get("momentum", 0.0), hyper.get("nesterov", False)
        if mom:
            slots[0] = mom * slots[0] - lr * g
            p = p + (mom * slots[0] - lr * g if nesterov else slots[0])
        else:
            p = p - lr * g
    elif name in ("adam", "adamw"):
        b1, b2, eps = hyper.get("beta_1", 0.9), hyper.get("beta_2", 0.999), hyper.get("epsilon", 1e-7)
        if name == "adamw":
            p = p - p * hyper.get("weight_decay", 0.004) * lr
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        slots[0] = slots[0] + (g - slots[0]) * (1 - b1)
        slots[1] = slots[1] + (g * g - slots[1]) * (1 - b2)
        v = slots[1]
        if hyper.get("amsgrad"):
            slots[2] = np.maximum(slots[2], slots[1])
            v = slots[2]
        p = p - alpha * slots[0] / (np.sqrt(v) + eps)
    elif name == "rmsprop":
        rho, mom, eps, centered = hyper.get("rho", 0.9), hyper.get("momentum", 0.0), hyper.get("epsilon", 1e-7), hyper.get("centered", False)
        slots[0] = rho * slots[0] + (1 - rho) * g * g
        denom = slots[0] + eps
        if centered:
            slots[-1] = rho * slots[-1] + (1 - rho) * g
            denom = slots[0] - slots[-1] ** 2 + eps
        inc = lr * g / np.sqrt(denom)
        if mom:
            slots[1] = mom * slots[1] + inc
            p = p - slots[1]
        else:
            p = p - inc
    else:  # adagrad
        slots[0] = slots[0] + g * g
        p = p - lr * g / np.sqrt(slots[0] + hyper.get("epsilon", 1e-7))
    return p, slots


CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adam", {"amsgrad": True, "beta_1": 0.8}), ("adamw", {}), ("adamw", {"weight_decay": 0.1, "amsgrad": True}),
    ("rmsprop", {}), ("rmsprop", {"momentum": 0.5}), ("rmsprop", {"centered": True}), ("rmsprop", {"centered": True, "momentum": 0.3}),
    ("adagrad", {}),
]


def run_steps(opt, params, grads_per_step, lr):
    """Apply the optimizer's IR update op for several steps; returns final params and slots."""
    class W:  # the optimizer builds slots for objects with .path and .value, as for Variables
        def __init__(self, i, v):
            self.path, self.value = f"w{i}", v

    weights = [W(i, torch.from_numpy(p)) for i, p in enumerate(params)]
    opt.build(weights)
    for grads in grads_per_step:
        opt.iterations += 1
        b = GraphBuilder("step")
        pv = [b.input(p.shape, "float64", f"p{i}") for i, p in enumerate(params)]
        gv = [b.input(g.shape, "float64", f"g{i}") for i, g in enumerate(grads)]
        sv = [[b.input(s.shape, "float64", f"s{i}_{j}") for j, s in enumerate(opt.slots[w.path])] for i, w in enumerate(weights)]
        lrv, stepv = b.input((), "float64", "lr"), b.input((), "float64", "step")
        new_p, new_s = opt.emit_update(b, pv, opt.clip(b, gv), sv, lrv, stepv)
        graph = b.finish([*new_p, *[s for per in new_s for s in per]])
        feeds = [w.value for w in weights] + [torch.from_numpy(g) for g in grads]
        feeds += [s for w in weights for s in opt.slots[w.path]] + [torch.tensor(lr, dtype=torch.float64), torch.tensor(float(opt.iterations), dtype=torch.float64)]
        outs = run_reference(graph, feeds, {})
        n = len(weights)
        for i, w in enumerate(weights):
            w.value = outs[i]
            k = opt.slots_per_param
            opt.slots[w.path] = outs[n + i * k : n + (i + 1) * k]
    return [w.value.numpy() for w in weights], [[s.numpy() for s in opt.slots[w.path]] for w in weights]


@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_three_steps_equal_keras_formulas(name, hyper):
    rng = np.random.default_rng(0)
    params = [rng.normal(size=s) for s in SHAPES]
    steps = [[rng.normal(size=s) for s in SHAPES] for _ in range(3)]
    lr = 0.05
    opt = optimizers.get(name).__class__(learning_rate=lr, **hyper)
    got_p, got_s = run_steps(opt, params, steps, lr)
    k = opt.slots_per_param
    for i, p in enumerate(params):
        want_p = p
        slots = [np.full_like(p, 0.1 if name == "adagrad" else 0.0) for _ in range(k)]
        for t, grads in enumerate(steps, start=1):
            want_p, slots = keras_step(name, hyper, want_p, grads[i], slots, lr, t)
        np.testing.assert_allclose(got_p[i], want_p, rtol=1e-12, atol=1e-12)
        for got, want in zip(got_s[i], slots):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["clipvalue", "clipnorm", "global_clipnorm"])
def test_gradient_clipping(kind):
    rng = np.random.default_rng(1)
    params = [rng.normal(size=s) for s in SHAPES]
    grads = [rng.normal(size=s) * 3 for s in SHAPES]
    opt = optimizers.SGD(learning_rate=1.0, **{kind: 0.5})
    got, _ = run_steps(opt, params, [grads], 1.0)
    if kind == "clipvalue":
        clipped = [np.clip(g, -0.5, 0.5) for g in grads]
    elif kind == "clipnorm":
        clipped = [g * 0.5 / max(np.linalg.norm(g), 0.5) for g in grads]
    else:
        total = math.sqrt(sum((g * g).sum() for g in grads))
        clipped = [g * 0.5 / max(total, 0.5) for g in grads]
    for p, g, q in zip(params, clipped, got):
        np.testing.assert_allclose(q, p - g, rtol=1e-12)


def test_defaults_are_keras():
    assert optimizers.get("adam").hyper == {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}
    assert optimizers.get("adam").learning_rate == 0.001
    assert optimizers.get("sgd").learning_rate == 0.01
    rms = optimizers.get("rmsprop")
    assert rms.hyper["rho"] == 0.9 and rms.learning_rate == 0.001 and rms.hyper["epsilon"] == 1e-7
    assert optimizers.AdamW().hyper["weight_decay"] == 0.004
    assert optimizers.Adagrad().initial_accumulator_value == 0.1


def test_unknown_names_and_bad_arguments():
    with pytest.raises(ArgumentError, match="Did you mean 'adam'"):
        optimizers.get("adma")
    with pytest.raises(ArgumentError, match="learning_rate"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(ArgumentError, match="at most one"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)


def test_schedules_follow_keras():
    e = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert e(0) == 0.1 and math.isclose(e(10), 0.05) and math.isclose(e(5), 0.1 * 0.5**0.5)
    assert math.isclose(schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)(15), 0.05)
    p = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [p(0), p(10), p(11), p(20), p(21)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    c = schedules.CosineDecay(1.0, decay_steps=100, alpha=0.1)
    assert c(0) == 1.0 and math.isclose(c(100), 0.1) and math.isclose(c(50), 0.55)
    w = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=5)
    assert math.isclose(w(0), 0.0) and math.isclose(w(5), 1.0) and math.isclose(w(15), 0.0)
    opt = optimizers.SGD(learning_rate=e)
    opt.iterations = 10
    assert math.isclose(opt.current_learning_rate(), 0.05)
