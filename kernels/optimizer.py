"""Optimizer template: one launch updates every parameter of the model (multi-tensor).

The training step ends with one optimizer_update op over n parameters of
different shapes (kcomp/ir/ops/optim.py has the formulas, Keras 3's). One
kernel per parameter would be n launches of a few blocks each; here the
blocks of all parameters form one flat grid. The host gives the kernel two
small device tables:

    TABLE   int64 (n, 5 + 2K): per parameter the addresses (data_ptr) of
            param, grad, slot_0..slot_K-1, new param, new slot_0..slot_K-1,
            then its numel and the index of its first block in the grid
    OWNERS  int32 (blocks,): the parameter (row of TABLE) each block belongs to

A program reads its row, turns the addresses into float32 pointers and updates
BLOCK elements of that parameter. Int-to-pointer casts work under Triton's
interpreter too: there the addresses are those of the CPU tensors, which the
interpreter reads directly (so interpreted launches need CPU tensors).

The algorithm and its flags are constexprs; hyper-parameters are scalar
arguments, with the constants derived from them (1 - beta, log(beta)) computed
once on the host in float64; the learning rate and the step are loaded from
their device tensors, so a step needs no host read and can be captured in a
CUDA graph. Everything is computed in float32.

The tables depend only on the tensors' addresses; they are built once per set
of addresses and kept (`address_table`). A captured CUDA graph replays the
launch with the tables and addresses of its capture, so it needs the same
buffers at every replay; tables first needed inside a capture are filled once
when it ends, outside the graph (`_build`).
"""

import math
from collections import OrderedDict
from itertools import accumulate

import torch
import triton
import triton.language as tl

from kcomp.runtime import cuda_graphs


@triton.jit
def _tensor(row, column):
    """The float32 pointer whose address is in `column` of a TABLE row."""
    return tl.load(row + column).to(tl.pointer_type(tl.float32))


@triton.jit
def _load(row, column, offs, mask):
    return tl.load(_tensor(row, column) + offs, mask=mask, other=0.0)


@triton.jit
def _store(row, column, offs, mask, value):
    tl.store(_tensor(row, column) + offs, value, mask=mask)


@triton.jit
def _one_minus_power(log_beta, step):
    """1 - beta**step, from log(beta): -expm1(step * log(beta)).

    In early steps beta**step is close to 1 (beta_2 = 0.999), and 1 - exp(x)
    would cancel to about 6e-5 relative error in float32 at step 1; below
    |x| = 0.5 a Taylor series of expm1 (truncation < 3e-7 relative) does not
    cancel. libdevice.expm1 would do this on a GPU, but the interpreter cannot
    run libdevice functions.
    """
    x = step * log_beta
    series = x * (1.0 + x * (1.0 / 2 + x * (1.0 / 6 + x * (1.0 / 24 + x * (1.0 / 120 + x * (1.0 / 720 + x / 5040))))))
    return -tl.where(tl.abs(x) < 0.5, series, tl.exp(x) - 1.0)


@triton.jit
def _sgd(row, offs, mask, p, g, lr, momentum, K: tl.constexpr, NESTEROV: tl.constexpr):
    if K == 0:  # no momentum, no slot
        p = p - lr * g
    else:
        m = momentum * _load(row, 2, offs, mask) - lr * g
        _store(row, 3 + K, offs, mask, m)
        if NESTEROV:
            p = p + (momentum * m - lr * g)
        else:
            p = p + m
    return p


@triton.jit
def _adam(row, offs, mask, p, g, lr, step, one_minus_beta_1, one_minus_beta_2, log_beta_1, log_beta_2, epsilon,
          weight_decay, K: tl.constexpr, DECOUPLED: tl.constexpr, AMSGRAD: tl.constexpr):
    if DECOUPLED:  # AdamW: weight decay first, on the old value
        p = p - p * weight_decay * lr
    # Keras folds the bias corrections into the step size and adds epsilon to sqrt(v).
    alpha = lr * tl.sqrt(_one_minus_power(log_beta_2, step)) / _one_minus_power(log_beta_1, step)
    m = _load(row, 2, offs, mask)
    v = _load(row, 3, offs, mask)
    m = m + (g - m) * one_minus_beta_1
    v = v + (g * g - v) * one_minus_beta_2
    _store(row, 3 + K, offs, mask, m)
    _store(row, 4 + K, offs, mask, v)
    if AMSGRAD:
        v = tl.maximum(_load(row, 4, offs, mask), v, propagate_nan=tl.PropagateNan.ALL)  # NaN stays, as torch.maximum
        _store(row, 5 + K, offs, mask, v)
    return p - alpha * m / (tl.sqrt(v) + epsilon)


@triton.jit
def _rmsprop(row, offs, mask, p, g, lr, momentum, rho, one_minus_rho, epsilon,
             K: tl.constexpr, MOMENTUM: tl.constexpr, CENTERED: tl.constexpr):
    # Slots: v, then the momentum buffer (with momentum), then the mean gradient (centered) last.
    v = rho * _load(row, 2, offs, mask) + one_minus_rho * g * g
    _store(row, 3 + K, offs, mask, v)
    denominator = v + epsilon  # Keras: epsilon inside the square root
    if CENTERED:
        average = rho * _load(row, 1 + K, offs, mask) + one_minus_rho * g
        _store(row, 2 + 2 * K, offs, mask, average)
        denominator = v - average * average + epsilon
    increment = lr * g / tl.sqrt(denominator)
    if MOMENTUM:
        buffer = momentum * _load(row, 3, offs, mask) + increment
        _store(row, 4 + K, offs, mask, buffer)
        increment = buffer
    return p - increment


@triton.jit
def _adagrad(row, offs, mask, p, g, lr, epsilon, K: tl.constexpr):
    accumulator = _load(row, 2, offs, mask) + g * g
    _store(row, 3 + K, offs, mask, accumulator)
    return p - lr * g / tl.sqrt(accumulator + epsilon)


@triton.jit
def optimizer_kernel(
    TABLE, OWNERS, LR, STEP,
    momentum, one_minus_beta_1, one_minus_beta_2, log_beta_1, log_beta_2, epsilon, rho, one_minus_rho, weight_decay,
    ALGORITHM: tl.constexpr, K: tl.constexpr, NESTEROV: tl.constexpr, AMSGRAD: tl.constexpr,
    MOMENTUM: tl.constexpr, CENTERED: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = TABLE + tl.load(OWNERS + pid).to(tl.int64) * (5 + 2 * K)
    numel = tl.load(row + 3 + 2 * K)
    first_block = tl.load(row + 4 + 2 * K)
    offs = (pid - first_block) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    lr = tl.load(LR)
    p = _load(row, 0, offs, mask)
    g = _load(row, 1, offs, mask)
    if ALGORITHM == "sgd":
        p = _sgd(row, offs, mask, p, g, lr, momentum, K, NESTEROV)
    elif ALGORITHM == "rmsprop":
        p = _rmsprop(row, offs, mask, p, g, lr, momentum, rho, one_minus_rho, epsilon, K, MOMENTUM, CENTERED)
    elif ALGORITHM == "adagrad":
        p = _adagrad(row, offs, mask, p, g, lr, epsilon, K)
    else:  # adam, adamw
        p = _adam(row, offs, mask, p, g, lr, tl.load(STEP), one_minus_beta_1, one_minus_beta_2, log_beta_1,
                  log_beta_2, epsilon, weight_decay, K, ALGORITHM == "adamw", AMSGRAD)
    _store(row, 2 + K, offs, mask, p)


# --- host side ----------------------------------------------------------------------------------

# One configuration: choosing among several would time the kernel by launching it
# repeatedly, which is only harmless while the new values never overwrite the old.
GPU_CONFIG = dict(BLOCK=1024, num_warps=4)
INTERPRETER_CONFIG = dict(BLOCK=1024, num_warps=4)


def candidate_configs(interpret: bool) -> list[dict]:
    return [INTERPRETER_CONFIG if interpret else GPU_CONFIG]


def _log(beta: float) -> float:
    return math.log(beta) if beta > 0 else float("-inf")  # beta 0: beta**step is 0 from the first step


def hyper_parameters(momentum=0.0, beta_1=0.9, beta_2=0.999, epsilon=1e-7, rho=0.9, weight_decay=0.0) -> dict:
    """The kernel's scalar arguments. 1 - beta and log(beta) are computed here in float64:
    rounded to float32 first, 1 - 0.999 would be off by 1.3e-5 relative."""
    return dict(
        momentum=float(momentum), one_minus_beta_1=1.0 - beta_1, one_minus_beta_2=1.0 - beta_2,
        log_beta_1=_log(beta_1), log_beta_2=_log(beta_2), epsilon=float(epsilon),
        rho=float(rho), one_minus_rho=1.0 - rho, weight_decay=float(weight_decay),
    )


def check_operands(params, grads, slots, lr, step) -> tuple:
    """Every tensor float32 on one device, made contiguous (the kernel reads flat memory)."""
    device = lr.device
    for t in (*params, *grads, *slots, lr, step):
        if t.dtype != torch.float32 or t.device != device:
            raise TypeError(f"optimizer kernel: expected float32 tensors on {device}, received {t.dtype} on {t.device}")
    if device.type != "cpu" and _interpreted():
        raise TypeError("optimizer kernel: under Triton's interpreter the tensors must be on the CPU")
    return tuple(t.contiguous() for t in params), tuple(t.contiguous() for t in grads), tuple(t.contiguous() for t in slots)


def _interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(optimizer_kernel, InterpretedFunction)


# Tables by (device, BLOCK, addresses and sizes), most recent last. A few entries cover the
# buffers a runtime alternates between; a CUDA graph that reads a table keeps it alive itself.
_TABLES: OrderedDict = OrderedDict()
MAX_TABLES = 8


def address_table(params, grads, slots, news, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(TABLE, OWNERS) for these tensors; `news` are the outputs, new params then new slots."""
    sources = (*params, *slots)
    for new, source in zip(news, sources, strict=True):
        if not new.is_contiguous() or new.shape != source.shape or new.dtype != torch.float32 or new.device != source.device:
            raise TypeError(f"optimizer kernel: an output buffer must be a contiguous float32 tensor of shape "
                            f"{tuple(source.shape)} on {source.device}; received {tuple(new.shape)} {new.dtype} on {new.device}")
    rows = _rows(params, grads, slots, news)
    device = params[0].device
    key = (str(device), block, rows)
    capturing = cuda_graphs.capture_in_progress(device)
    tables = _TABLES.get(key)
    if tables is None and capturing:
        # Buffers first seen inside a capture (the gradients a plan allocates during it): the
        # tables are allocated now and filled when the capture ends, outside the graph, so no
        # replay repeats a copy (the graph only reads them).
        tables = _build(rows, block, device, after_capture=True)
    elif tables is None:
        tables = _TABLES[key] = _build(rows, block, device)
        while len(_TABLES) > MAX_TABLES:
            _TABLES.popitem(last=False)
    elif key in _TABLES:
        _TABLES.move_to_end(key)
    if capturing:
        cuda_graphs.keep_for_the_graph(tables)  # it reads them at every replay, even once evicted here
    return tables[:2]


def _rows(params, grads, slots, news) -> tuple:
    """Per parameter: the addresses of param, grad, its K slots, new param, its K new slots; then numel."""
    n = len(params)
    k = len(slots) // n
    rows = []
    for i in range(n):
        tensors = [params[i], grads[i], *slots[i * k : (i + 1) * k], news[i], *news[n + i * k : n + (i + 1) * k]]
        rows.append(tuple(t.data_ptr() for t in tensors) + (params[i].numel(),))
    return tuple(rows)


def _build(rows, block: int, device, after_capture: bool = False) -> tuple:
    """The device tables: each row gets the index of its first block; OWNERS maps blocks to rows.
    after_capture=True (inside a CUDA-graph capture) fills them when the capture ends."""
    blocks = [triton.cdiv(row[-1], block) for row in rows]
    firsts = [0, *accumulate(blocks)][:-1]
    table = torch.tensor([[*row, first] for row, first in zip(rows, firsts)], dtype=torch.int64)
    owners = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), torch.tensor(blocks))
    if not after_capture:
        return table.to(device), owners.to(device)
    devices = tuple(torch.empty(h.shape, dtype=h.dtype, device=device) for h in (table, owners))
    for d, h in zip(devices, (table, owners)):
        cuda_graphs.outside_the_graph(lambda d=d, h=h: d.copy_(h))
    return devices
