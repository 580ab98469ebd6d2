"""Triton helpers the algorithms' updates share: slot access and 1 - beta**step.

A program of the multi-tensor kernel (kernels/optimizer.py) works on one row of
its address TABLE: the addresses of param, grad, slot_0..slot_K-1, new param,
new slot_0..slot_K-1, then numel. A record's update reads slot j and writes new
slot j through `slot` and `set_slot`; the kernel loads p and g and stores the
new p. Plain functions marked @triton_hook: Triton compiles them on first use
(record.py says why; `tl` is bound then).
"""

from __future__ import annotations

from kcomp.ir.optim.record import triton_hook

tl = None  # triton.language, bound when a kernel is first built (record.jitted)


@triton_hook
def column(row, index):
    """The float32 pointer whose address is in column `index` of a TABLE row."""
    return tl.load(row + index).to(tl.pointer_type(tl.float32))


@triton_hook
def load(row, index, offs, mask):
    return tl.load(column(row, index) + offs, mask=mask, other=0.0)


@triton_hook
def store(row, index, offs, mask, value):
    tl.store(column(row, index) + offs, value, mask=mask)


@triton_hook
def slot(row, j: tl.constexpr, offs, mask):
    """Slot j of this parameter, as the step found it."""
    return load(row, 2 + j, offs, mask)


@triton_hook
def set_slot(row, j: tl.constexpr, K: tl.constexpr, offs, mask, value):
    """Write the new value of slot j (K: slots per parameter)."""
    store(row, 3 + K + j, offs, mask, value)


@triton_hook
def one_minus_power(log_beta, step):
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


def log(beta: float) -> float:
    """log(beta) for one_minus_power, on the host in float64; beta 0: beta**step is 0 from the first step."""
    import math

    return math.log(beta) if beta > 0 else float("-inf")
