"""Masked recurrent ops on PyTorch's fused kernels (kcomp/ir/ops/recurrent_torch_masked.py): where each
row's read steps are one run, the fused path gives the general path's outputs and gradients
(float64) for every cell, mask layout and flag; a mask with holes is left to the general path."""

import itertools

import pytest
import torch

from kcomp.ir.ops import recurrent
from kcomp.ir.ops.recurrent_torch_masked import fused_masked, read_runs

BATCH, TIME, FEATURES, UNITS = 4, 7, 5, 6
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
GENERAL = {"lstm": recurrent._lstm, "gru": recurrent._gru, "simple_rnn": recurrent._simple_rnn}

RUNS = {  # (batch, time): 1 = a step to read; each row's read steps one run
    "pre-padded": [[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1], [1] * 7, [0] * 7],
    "post-padded": [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1] * 7, [0] * 7],
    "runs-inside": [[0, 1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0, 0]],
}
HOLES = [[1, 0, 1, 1, 0, 1, 0], [1] * 7, [1] * 7, [1] * 7]


def _inputs(cell, g):
    def rand(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_(True)

    bias = rand(2, 3 * UNITS) if cell == "gru" else rand(GATES[cell] * UNITS)
    return rand(BATCH, TIME, FEATURES), rand(FEATURES, GATES[cell] * UNITS), rand(UNITS, GATES[cell] * UNITS), bias


def _attrs(cell, activation, go_backwards, return_sequences):
    attrs = dict(activation=activation, recurrent_activation="sigmoid", use_bias=True,
                 return_sequences=return_sequences, go_backwards=go_backwards)
    return {**attrs, "reset_after": True} if cell == "gru" else attrs


FLAGS = list(itertools.product([False, True], repeat=3))  # go_backwards, return_sequences, zero_output_for_mask


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "-".join(n for n, on in zip(("backwards", "sequences", "zeros"), f) if on) or "default")
@pytest.mark.parametrize("layout", sorted(RUNS))
@pytest.mark.parametrize("cell, activation", [("lstm", "tanh"), ("gru", "tanh"), ("simple_rnn", "tanh"), ("simple_rnn", "relu")])
def test_fused_masked_path_equals_the_general_path_with_gradients(cell, activation, layout, flags):
    go_backwards, return_sequences, zero_output_for_mask = flags
    g = torch.Generator().manual_seed(hash((cell, activation, layout, flags)) % 2**31)
    inputs = _inputs(cell, g)
    mask = torch.tensor(RUNS[layout], dtype=torch.float64)
    attrs = _attrs(cell, activation, go_backwards, return_sequences)
    got = fused_masked(cell, *inputs[:3], inputs[3], mask, zero_output_for_mask, **attrs)
    assert got is not None, "one run per row: the fused path takes it"
    want = GENERAL[cell](*inputs, mask=mask, zero_output_for_mask=zero_output_for_mask, **attrs)
    assert len(got) == len(want)
    upstream = [torch.randn(w.shape, dtype=torch.float64, generator=g) for w in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    grads_got = torch.autograd.grad(sum((o * u).sum() for o, u in zip(got, upstream)), inputs)
    grads_want = torch.autograd.grad(sum((o * u).sum() for o, u in zip(want, upstream)), inputs)
    for a, b in zip(grads_got, grads_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_a_mask_with_holes_or_a_cell_pytorch_lacks_goes_to_the_general_path():
    g = torch.Generator().manual_seed(0)
    x, kernel, rec, bias = _inputs("lstm", g)
    holes = torch.tensor(HOLES, dtype=torch.float64)
    assert read_runs(holes != 0) is None
    assert fused_masked("lstm", x, kernel, rec, bias, holes, False, **_attrs("lstm", "tanh", False, False)) is None
    runs = torch.tensor(RUNS["pre-padded"], dtype=torch.float64)
    assert fused_masked("lstm", x, kernel, rec, bias, runs, False, **_attrs("lstm", "relu", False, False)) is None
    # the op still gives the general path's numbers there
    attrs = _attrs("lstm", "tanh", False, True)
    got = recurrent.forward("lstm")(x, kernel, rec, bias, mask=holes, **attrs)
    want = recurrent._lstm(x, kernel, rec, bias, mask=holes, **attrs)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_read_runs_finds_each_rows_first_step_and_length():
    starts, lengths = read_runs(torch.tensor(RUNS["runs-inside"]) != 0)
    assert starts.tolist() == [1, 6, 0, 2] and lengths.tolist() == [3, 1, 1, 3]
    starts, lengths = read_runs(torch.tensor(RUNS["post-padded"]) != 0)
    assert starts.tolist() == [0, 0, 0, TIME] and lengths.tolist() == [4, 6, 7, 0]  # no step read: starts after the last


@pytest.mark.parametrize("layout", sorted(RUNS))
def test_float32_lstm_final_c_is_carried_through_the_steps_after_each_run(layout):
    """float32 runs PyTorch's oneDNN kernel: the held gates (i = 0, f = 1 after a row's run) must
    round exactly there too, so the final c, and its gradient, are the general path's."""
    g = torch.Generator().manual_seed(7)
    inputs = [t.detach().float().requires_grad_(True) for t in _inputs("lstm", g)]
    mask = torch.tensor(RUNS[layout], dtype=torch.float32)
    attrs = _attrs("lstm", "tanh", False, False)
    got = fused_masked("lstm", *inputs[:3], inputs[3], mask, False, **attrs)
    want = recurrent._lstm(*inputs, mask=mask, **attrs)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-6)
    grads = [torch.autograd.grad(out[2].sum(), inputs) for out in (got, want)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
