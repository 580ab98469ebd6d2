"""Keras's recurrent cells on PyTorch's fused recurrent kernels, where the semantics match.

torch.lstm / torch.gru / torch.rnn_tanh / torch.rnn_relu run a whole sequence in one call
(oneDNN on a CPU, cuDNN on a GPU), forward and backward. They compute exactly Keras's cells
when the activations are the defaults they hard-wire (tanh, and sigmoid for the gates) and a
GRU applies its reset gate after the recurrent matmul (reset_after=True, Keras's default).
The weights are Keras's, transposed, with the gates reordered where the orders differ:
  LSTM  Keras i, f, c, o   = PyTorch i, f, g, o
  GRU   Keras z, r, h      -> PyTorch r, z, n (the input and recurrent biases are Keras's two bias rows)
Anything else (other activations, a GRU with reset_after=False, dtypes PyTorch's CPU kernels
do not take) returns None and runs the general path in recurrent.py. A masked sequence runs them
too where each row's read steps are one run (recurrent_torch_masked.py).
"""

import torch

FUSED_DTYPES = (torch.float32, torch.float64)


def fused_runner(cell: str, dtype, activation, recurrent_activation, reset_after=True):
    """PyTorch's fused function computing Keras's cell (torch.lstm, ...), or None where they differ."""
    if dtype not in FUSED_DTYPES or (cell == "gru" and not reset_after):
        return None
    if cell == "simple_rnn":
        if activation not in ("tanh", "relu"):
            return None
        return torch.rnn_tanh if activation == "tanh" else torch.rnn_relu
    if activation != "tanh" or recurrent_activation != "sigmoid":
        return None
    return torch.lstm if cell == "lstm" else torch.gru


def fused(cell: str, x, kernel, recurrent, bias, activation, recurrent_activation, use_bias, return_sequences,
          go_backwards, reset_after=True):
    """(sequence or last h, *final states) as the op returns them, or None where PyTorch's cell differs."""
    run = fused_runner(cell, x.dtype, activation, recurrent_activation, reset_after)
    if run is None:
        return None
    units = recurrent.shape[0]
    params = fused_weights(cell, kernel, recurrent, bias if use_bias else None, units)
    sequence = x.flip(1) if go_backwards else x  # the returned sequence is in the order it was read, as Keras's
    # train=True: the fused kernels then keep what their backward needs (they drop nothing here: dropout 0)
    outputs = run(sequence, zero_states(cell, x, units), params, use_bias, 1, 0.0, True, False, True)
    seq, states = outputs[0], [s[0] for s in outputs[1:]]
    return (seq if return_sequences else states[0], *states)


def zero_states(cell: str, x, units: int, batch: int | None = None):
    """The fused functions' initial state argument: zeros, (h, c) for an LSTM."""
    h0 = x.new_zeros(1, x.shape[0] if batch is None else batch, units)
    return (h0, h0) if cell == "lstm" else h0


def fused_weights(cell, kernel, recurrent, bias, units) -> list:
    if cell == "gru":
        w_ih, w_hh = _reset_first(kernel, units).t(), _reset_first(recurrent, units).t()
        if bias is None:
            return [w_ih, w_hh]
        return [w_ih, w_hh, _reset_first(bias[0], units), _reset_first(bias[1], units)]
    weights = [kernel.t(), recurrent.t()]
    return weights if bias is None else [*weights, bias, torch.zeros_like(bias)]


def _reset_first(w, units):
    """Keras's GRU gate blocks z, r, h along the last axis in PyTorch's order r, z, n."""
    z, r, h = w.split(units, dim=-1)
    return torch.cat([r, z, h], dim=-1)
