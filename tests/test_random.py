"""Dropout's counter-based RNG (kcomp/random.py, kernels/random.py).

The torch Philox against Triton's own tl.randint / tl.philox / tl.rand under
the interpreter (bit for bit); the kernel helper against the reference; the
mask's statistics; and fused dropout (pointwise body, matmul epilogue and
prologue, conv epilogue with a pool, the backward, a whole training step)
against the reference executor: the same mask, so pointwise results are equal.
"""

import math

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import kcomp
from kcomp import random as krandom
from kcomp.codegen.module import kernel_source
from kcomp.ir import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.kernels import random as rng
from kcomp.layers import Dense, Dropout, Input
from kcomp.models import Sequential
from kcomp.passes import run_pipeline
from kcomp.passes.pipeline import STEP_PIPELINE
from kcomp.passes.autodiff import gradients

from kernel_helpers import assert_compiled_matches_reference, assert_compiled_steps_match_the_reference, kernels_of

SEEDS = [0, 1, 12345, 2**32 + 7, 2**63 + 5]
BASES = [0, 2**32 - 100, 2**33 + 3]  # element indices that cross into the counter's high word


# ---------------------------------------------------------------- Triton's Philox, bit for bit


@triton.jit
def _triton_words(RANDINT, PHILOX, RAND, n, seed, base, step, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    offs = base + i.to(tl.int64)
    tl.store(RANDINT + i, tl.randint(seed, offs), mask=mask)
    tl.store(RAND + i, tl.rand(seed, offs), mask=mask)
    # Every counter in play: index halves, the step, and c3 (dropout keeps it 0; Philox does not need to).
    c0, c1, c2, c3 = tl.philox(seed, offs.to(tl.uint32), (offs >> 32).to(tl.uint32), i * 0 + step, i * 3)
    tl.store(PHILOX + i * 4 + 0, c0, mask=mask)
    tl.store(PHILOX + i * 4 + 1, c1, mask=mask)
    tl.store(PHILOX + i * 4 + 2, c2, mask=mask)
    tl.store(PHILOX + i * 4 + 3, c3, mask=mask)


def _triton(seed, base, step, n=300):
    randint = torch.full((n,), -1, dtype=torch.int64)  # poisoned: a uint32 word is never negative
    words = torch.full((n, 4), -1, dtype=torch.int64)
    rand = torch.full((n,), -1.0)
    _triton_words[(triton.cdiv(n, 128),)](randint, words, rand, n, seed, base, step, BLOCK=128)
    return randint, words, rand


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("seed", SEEDS)
def test_torch_philox_equals_triton_bit_for_bit(seed, base):
    step, n = 7, 300
    randint, words, rand = _triton(seed, base, step, n)
    index = base + torch.arange(n, dtype=torch.int64)
    key = krandom.seed_key(seed)
    lo, hi, zero = index & krandom.MASK32, index >> 32, torch.zeros((), dtype=torch.int64)
    # tl.randint: counters (index low, index high, 0, 0); tl.rand: the same word as a float in [0, 1).
    word = krandom.philox(key, lo, hi, zero, zero)[0]
    assert torch.equal(word, randint)
    assert torch.equal(krandom.uint32_to_uniform(word), rand)
    # tl.philox on all four counters, all four output words.
    c3 = torch.arange(n, dtype=torch.int64) * 3
    assert torch.equal(torch.stack(krandom.philox(key, lo, hi, torch.tensor(step), c3), dim=1), words)


@pytest.mark.parametrize("seed", SEEDS)
def test_cpu_philox_equals_the_torch_philox(seed):
    """philox_on_cpu (numpy uint64 products) gives philox's four words, every counter used:
    indices past 2**32, a step near 2**32, a fourth counter of large values."""
    g = torch.Generator().manual_seed(abs(seed) % 1000)
    index = torch.randint(0, 2**40, (333,), generator=g, dtype=torch.int64)
    c3 = torch.randint(0, 2**32, (333,), generator=g, dtype=torch.int64)
    counters = (index & krandom.MASK32, index >> 32, torch.tensor(2**32 - 3), c3)
    key = krandom.seed_key(seed)
    assert torch.equal(torch.stack(krandom.philox_on_cpu(key, *counters)), torch.stack(krandom.philox(key, *counters)))
    one = (torch.tensor(5), torch.tensor(0), torch.tensor(9), torch.tensor(0))  # every counter a scalar
    assert torch.equal(torch.stack(krandom.philox_on_cpu(key, *one)), torch.stack(krandom.philox(key, *one)))
    assert all(w.shape == () for w in krandom.philox_on_cpu(key, *one))


def test_small_masks_drawn_steps_ahead_are_the_masks_drawn_alone(monkeypatch):
    """On the CPU a small shape's uniforms come from a block of STEPS_AHEAD steps drawn at once: the
    same values as drawn one step at a time, for steps within, across and back before a block, and
    a caller writing into what it got changes no later draw."""
    def alone(step):
        return krandom._uniforms(30, 9, torch.tensor(step) & krandom.MASK32, "cpu").reshape(5, 6)

    for step in [3, 4, 3 + krandom.STEPS_AHEAD, 1, 2**32 + 512, 0]:  # (float32 steps: 2**32 + 512 is one)
        got = krandom.uniform((5, 6), seed=9, step=torch.tensor(float(step)), device="cpu")
        assert torch.equal(got, alone(step)), step
        got.fill_(2.0)
    assert torch.equal(krandom.uniform((5, 6), seed=9, step=None, device="cpu"), alone(0))
    assert not torch.equal(krandom.uniform((5, 6), seed=10, step=None, device="cpu"), alone(0))
    big = krandom.AHEAD_MAX_ELEMENTS + 1  # drawn alone, every time
    monkeypatch.setattr(krandom, "_uniform_ahead", None)
    assert krandom.uniform((big,), seed=9, step=torch.tensor(5.0), device="cpu").shape == (big,)


@pytest.mark.parametrize("numel", [1, 6, 4097])
def test_uniform_lays_each_calls_four_words_on_four_elements(numel):
    """uniform's row of calls (a call per four elements) equals uniform_at element by element, and
    element i's word is word i mod 4 of Philox's call at counter i // 4, on either generator."""
    step = torch.tensor(9.0)
    u = krandom.uniform((numel,), seed=2**40 + 3, step=step, device="cpu")
    index = torch.arange(numel, dtype=torch.int64)
    assert torch.equal(u, krandom.uniform_at(index, 2**40 + 3, step))
    calls = index >> 2
    words = torch.stack(krandom.philox(krandom.seed_key(2**40 + 3), calls & krandom.MASK32, calls >> 32,
                                       torch.tensor(9), torch.tensor(0)), dim=-1)
    assert torch.equal(u, krandom.uint32_to_uniform(words[index, index & 3]))


@triton.jit
def _helper(U, Y, X, STEP, n, base, SEED: tl.constexpr, RATE: tl.constexpr, SCALE: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    offs = base + i.to(tl.int64)
    step = tl.load(STEP)
    tl.store(U + i, rng.philox_uniform(offs, step, SEED), mask=mask)
    tl.store(Y + i, rng.dropout(tl.load(X + i, mask=mask), offs, step, SEED, RATE, SCALE), mask=mask)


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("seed", [3, 2**40 + 1, -5])
def test_kernel_helper_draws_the_reference_mask(seed, base):
    n, rate, step = 777, 0.3, torch.tensor(12.0)
    x = torch.randn(n)
    u, y = torch.full((n,), -1.0), torch.full((n,), float("nan"))
    seed_bits = seed & (2**64 - 1)  # as the generated code writes it
    _helper[(triton.cdiv(n, 256),)](u, y, x, step, n, base, SEED=seed_bits, RATE=rate, SCALE=1 / (1 - rate), BLOCK=256)
    want_u = krandom.uniform_at(base + torch.arange(n, dtype=torch.int64), seed, step)
    assert torch.equal(u, want_u)
    if base == 0:  # the reference numbers elements from 0
        want = OPS["dropout"].reference(x, step, rate=rate, seed=seed, training=True)
        assert torch.equal(y, want)


# ---------------------------------------------------------------- the mask


def _dropout(x, step=None, rate=0.5, seed=11):
    steps = () if step is None else (torch.tensor(float(step)),)
    return OPS["dropout"].reference(x, *steps, rate=rate, seed=seed, training=True)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_and_independence_across_steps(rate):
    x = torch.rand(500, 601) + 1.0  # never 0: a zero output is a dropped element
    one, two = _dropout(x, 1, rate) != 0, _dropout(x, 2, rate) != 0
    keep = 1.0 - rate
    assert abs(one.float().mean().item() - keep) < 6 * math.sqrt(rate * keep / x.numel())  # 6 sigma
    # Two steps draw independent masks: they agree with probability keep^2 + rate^2.
    p_agree = keep**2 + rate**2
    agree = (one == two).float().mean().item()
    assert abs(agree - p_agree) < 6 * math.sqrt(p_agree * (1 - p_agree) / x.numel())


def test_uniform_is_in_zero_one_and_flat():
    u = krandom.uniform((600, 500), seed=5, step=torch.tensor(3.0), device="cpu")
    assert u.dtype == torch.float32 and u.min() >= 0.0 and u.max() < 1.0
    counts = torch.histc(u, bins=10, min=0.0, max=1.0) / u.numel()
    assert torch.all((counts - 0.1).abs() < 6 * math.sqrt(0.1 * 0.9 / u.numel()))


def test_same_seed_and_step_same_mask_otherwise_new():
    x = torch.rand(64, 129) + 1.0
    y = _dropout(x, 4)
    assert torch.equal(_dropout(x, 4), y)
    assert not torch.equal(_dropout(x, 5) != 0, y != 0)
    assert not torch.equal(_dropout(x, 4, seed=12) != 0, y != 0)
    assert torch.equal(_dropout(x) != 0, _dropout(x, 0) != 0)  # no step input: step 0


@pytest.mark.parametrize("rate", [0.2, 0.75])
def test_inverted_scaling_as_keras(rate):
    x = torch.randn(97, 31)
    y = _dropout(x, 2, rate)
    kept = y != 0
    scale = torch.tensor(1 / (1 - rate), dtype=torch.float32)  # the kernel's float32 constant
    assert torch.equal(y[kept], x[kept] * scale)
    torch.testing.assert_close(y[kept], x[kept] / (1 - rate), rtol=1e-6, atol=0)
    half = _dropout(x.half(), 2, rate)
    assert half.dtype == torch.float16 and torch.equal(half != 0, kept)


def test_inference_and_rate_zero_are_the_identity():
    x = torch.randn(5, 7)
    assert OPS["dropout"].reference(x, torch.tensor(3.0), rate=0.5, seed=1, training=False) is x
    assert OPS["dropout"].reference(x, torch.tensor(3.0), rate=0.0, seed=1, training=True) is x


def test_the_reference_never_reads_the_step_on_the_host():
    # Meta tensors have no data: any int() / .item() of the step would raise.
    x, step = torch.empty(6, 5, device="meta"), torch.empty((), device="meta")
    y = OPS["dropout"].reference(x, step, rate=0.5, seed=3, training=True)
    assert y.device.type == "meta" and y.shape == (6, 5)


# ---------------------------------------------------------------- fused kernels


def _dropout_kernels(fused):
    return [k for k in kernels_of(fused) if any(n.op == "dropout" for n in k.attrs["body"].nodes)]


def test_pointwise_kernel_draws_the_reference_mask_exactly():
    b = GraphBuilder("g")
    x = b.input((None, 37, 19), "float32", "x")
    step = b.input((), "float32", "step")
    y = b.emit1("dropout", [b.emit1("relu", [x]), step], rate=0.3, seed=7, training=True)
    graph = b.finish([b.emit1("add", [y, x])])
    xs = torch.randn(5, 37, 19)  # 3515 elements: several ragged blocks
    for s in (1.0, 2.0):
        fused = assert_compiled_matches_reference(graph, [xs, torch.tensor(s)], kind="exact").fused
    (kernel,) = kernels_of(fused)
    assert kernel.attrs["template"] == "pointwise" and not [n for n in fused.nodes if n.op == "dropout"]
    assert "rng.dropout(" in kernel_source(kernel, 0).text


def test_backward_dropout_is_fused_and_reuses_the_mask():
    b = GraphBuilder("g")
    x = b.input((None, 13, 11), "float32", "x")
    step = b.input((), "float32", "step")
    cot = b.input((None, 13, 11), "float32", "cot")
    y = b.emit1("dropout", [x, step], rate=0.4, seed=9, training=True)
    (dx,) = gradients(b, b.emit1("sum", [b.emit1("mul", [y, cot])]), [x])
    graph = b.finish([y, dx])
    xs, cs = torch.randn(6, 13, 11), torch.randn(6, 13, 11)
    fused, _, got, _ = assert_compiled_matches_reference(graph, [xs, torch.tensor(3.0), cs], kind="exact")
    assert len(_dropout_kernels(fused)) == 2 and not [n for n in fused.nodes if n.op == "dropout"]
    assert torch.equal(got[0] != 0, got[1] != 0)  # dx = dropout(cot): the forward's mask


def _dense_graph(where):
    b = GraphBuilder("g")
    x = b.input((None, 23), "float32", "x")
    step = b.input((), "float32", "step")
    w = b.param("w", (23, 19), "float32", "w")
    bias = b.param("b", (19,), "float32", "b")
    if where == "prologue":
        x = b.emit1("dropout", [x, step], rate=0.5, seed=4, training=True)
    h = b.emit1("bias_add", [b.emit1("matmul", [x, w]), bias])
    if where == "epilogue":
        h = b.emit1("dropout", [h, step], rate=0.5, seed=4, training=True)
    return b.finish([h])


@pytest.mark.parametrize("where", ["prologue", "epilogue"])
def test_dropout_in_a_matmul_kernel_draws_the_reference_mask(where):
    gen = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(23, 19, generator=gen), "b": torch.randn(19, generator=gen)}
    xs = torch.randn(37, 23, generator=gen)
    fused, _, (got,), (want,) = assert_compiled_matches_reference(_dense_graph(where), [xs, torch.tensor(5.0)], params,
                                                                  kind="accumulating")
    (kernel,) = _dropout_kernels(fused)
    assert kernel.attrs["template"] == "matmul"
    if where == "epilogue":
        assert torch.equal(got != 0, want != 0)  # the same mask; the products differ in rounding


def test_dropout_in_a_conv_epilogue_before_a_pool():
    b = GraphBuilder("g")
    x = b.input((None, 9, 11, 3), "float32", "x")
    step = b.input((), "float32", "step")
    k = b.param("k", (3, 3, 3, 5), "float32", "k")
    c = b.emit1("conv2d", [x, k], padding="same")
    d = b.emit1("dropout", [c, step], rate=0.3, seed=2, training=True)
    graph = b.finish([b.emit1("max_pool2d", [d], pool_size=(2, 2), strides=(2, 2))])
    gen = torch.Generator().manual_seed(1)
    xs, params = torch.randn(3, 9, 11, 3, generator=gen), {"k": torch.randn(3, 3, 3, 5, generator=gen)}
    fused = assert_compiled_matches_reference(graph, [xs, torch.tensor(2.0)], params, kind="accumulating").fused
    (kernel,) = _dropout_kernels(fused)
    assert [n.op for n in kernel.attrs["body"].nodes] == ["conv2d", "dropout", "max_pool2d"]


def test_monte_carlo_dropout_without_a_step_input_is_fused():
    model = kcomp.Model(x := Input(shape=(40,)), Dropout(0.5, seed=3)(x, training=True))
    graph = model.to_graph()
    assert len(graph.nodes[0].inputs) == 1  # no step: drawn at step 0
    xs = torch.rand(7, 40) + 1.0
    fused = assert_compiled_matches_reference(graph, [xs], model.params(), kind="exact").fused
    assert _dropout_kernels(fused)


def test_training_step_with_dropout_fuses_it_and_matches_the_reference():
    from kcomp.compiler import train_step_graph

    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(5)
        model = Sequential([Input(shape=(23,)), Dense(19, activation="relu"), Dropout(0.3), Dense(5, activation="softmax")])
        return model

    fused, _ = run_pipeline(train_step_graph(_compiled(make(), "reference")), passes=STEP_PIPELINE)
    assert not [n for n in fused.nodes if n.op == "dropout"] and len(_dropout_kernels(fused)) == 2
    gen = np.random.default_rng(3)
    x = gen.normal(size=(13, 23)).astype("float32")
    y = kcomp.utils.to_categorical(gen.integers(0, 5, 13), 5)
    assert_compiled_steps_match_the_reference(make, x, y)


def _compiled(model, backend):
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend=backend)
    return model
