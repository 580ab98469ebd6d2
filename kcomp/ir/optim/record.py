"""What one optimizer algorithm is, in one record: the fields every part of kcomp reads.

A record file (sgd.py, adam.py, ...) holds an algorithm whole: its names, its
hyper-parameters with Keras 3's defaults and checks, its slots, the torch
reference update (kcomp's oracle), the Triton update the one multi-tensor
kernel calls (kernels/optimizer.py), and its cost. The Keras class in
kcomp.optimizers, the optimizer_update op, the kernel, its generator and the
cost model all read these fields; none keeps a list of algorithms of its own.
"""

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kcomp.errors import ArgumentError


# --- hyper-parameters and their checks (Keras-style messages naming the value) ------------------


def is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def in_range(low: float, high: float, low_included: bool = True, high_included: bool = False) -> Callable:
    """A check: a finite number in the interval ([low, high) unless told); NaN, inf and strings are refused by name."""
    def check(name, value) -> float:
        below = value < low or (value == low and not low_included) if is_number(value) else True
        above = value > high or (value == high and not high_included) if is_number(value) else True
        if below or above:
            bound = f"{'[' if low_included else '('}{float(low)}, {float(high)}{']' if high_included else ')'}"
            raise ArgumentError(f"Received: {name}={value!r}. Expected a number in {bound}.")
        return float(value)

    return check


def positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not is_number(value) or value <= 0:
        raise ArgumentError(f"Received: {name}={value!r}. Expected a positive number{' or None' if allow_none else ''}.")
    return float(value)


NON_NEGATIVE = in_range(0.0, math.inf)
FRACTION = in_range(0.0, 1.0)  # a decay rate: 1 would never move
FRACTION_OR_ONE = in_range(0.0, 1.0, high_included=True)


def flag(name, value) -> bool:
    return bool(value)


@dataclass(frozen=True)
class Hyper:
    """One hyper-parameter: its Keras name and default, and the check that normalises a value."""

    name: str
    default: Any
    check: Callable = NON_NEGATIVE


# --- the record ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Algorithm:
    name: str  # the IR's name (optimizer_update's `algorithm`) and the Keras string name
    keras_class: str  # the class name in keras.optimizers (and kcomp.optimizers)
    learning_rate: float  # Keras's default
    hyper: tuple[Hyper, ...]
    # The slots of one parameter given the resolved hyper-parameters, grouped as Keras creates them
    # (one add_optimizer_variables call per group): their number is len of the flattened groups.
    slot_groups: Callable[[dict], tuple[tuple[str, ...], ...]]
    # (p, g, slots, lr, step, on_cpu, hyper) -> (new p, new slots); torch, any float dtype. lr and step
    # are 0-d tensors; on_cpu: they may be read as numbers (the reference executor), which lets an
    # update use torch's fused ops.
    reference: Callable
    # The Triton update (a @triton_hook function of the record's file) and its arguments: the
    # scalars (computed here in float64) and the constexprs, by the hook's parameter names.
    triton_update: Callable
    triton_arguments: Callable[[dict], tuple[dict, dict]]
    flops: int  # per parameter element, counted from the formulas
    initial_values: Callable[[dict], tuple[float, ...]] | None = None  # each slot's first value; None: zeros
    # (params, grads, slots per param, lr, step, on_cpu, hyper) -> None: `reference` of every parameter
    # written into it and its slots, bit for bit, for a runner whose state the step's outputs replace
    # (kcomp/runtime/reference_fusions.py); None: that runner makes new tensors with `reference`.
    reference_in_place: Callable | None = None
    doc: str = ""
    names: tuple[str, ...] = field(default=())  # more Keras string names, if any

    def __post_init__(self):
        for key in ("slot_groups", "reference", "triton_update", "triton_arguments"):
            if not callable(getattr(self, key)):
                raise TypeError(f"optimizer record {self.name}: {key} must be callable")
        if not getattr(self.triton_update, TRITON_HOOK, False):
            raise TypeError(f"optimizer record {self.name}: triton_update must be a @triton_hook function")
        if not isinstance(self.flops, int) or not self.doc:
            raise TypeError(f"optimizer record {self.name}: flops (an int) and doc are required")

    @property
    def defaults(self) -> dict:
        return {h.name: h.default for h in self.hyper}

    def resolve(self, given) -> dict:
        """Every hyper-parameter, given (a dict or (name, value) pairs) or Keras's default, each checked."""
        given = dict(given)
        known = {h.name for h in self.hyper}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ArgumentError(f"Received: {', '.join(f'{k}={given[k]!r}' for k in unknown)}. "
                                f"{self.keras_class} takes {sorted(known) or 'no hyper-parameters'}.")
        return {h.name: h.check(h.name, given[h.name] if h.name in given else h.default) for h in self.hyper}

    def slot_names(self, hyper: dict) -> tuple[str, ...]:
        return tuple(name for group in self.slot_groups(hyper) for name in group)

    def slot_count(self, hyper: dict) -> int:
        return len(self.slot_names(hyper))

    def first_values(self, hyper: dict) -> tuple[float, ...]:
        return self.initial_values(hyper) if self.initial_values else (0.0,) * self.slot_count(hyper)


# --- Triton hooks, written in the record files but compiled only when a kernel is built ------------
#
# Importing kcomp must not import Triton: Triton reads TRITON_INTERPRET once, when it is imported, and
# kcomp chooses interpreter mode late (kcomp/runtime/triton_mode.py). So a record file writes its
# Triton functions as plain functions marked @triton_hook, with `from __future__ import annotations`
# (their `tl.constexpr` annotations stay text) and `tl` bound by `jitted`. The kernel template, which
# imports Triton anyway, asks `jitted(record.triton_update)` for the @triton.jit function.

TRITON_HOOK = "__kcomp_triton_hook__"
_JITTED: dict = {}  # plain function -> its @triton.jit function


def triton_hook(fn):
    setattr(fn, TRITON_HOOK, True)
    return fn


def jitted(fn):
    """`fn` as a @triton.jit function. Triton compiles a function against its module's globals, so
    that module gets `tl`, and every hook it calls (helpers from other files too) is rebound there to
    its @triton.jit form first."""
    if fn in _JITTED:
        return _JITTED[fn]
    if fn in _JITTED.values():  # a module's name already rebound to its @triton.jit form
        return fn
    import triton
    import triton.language as tl

    module = sys.modules[fn.__module__]
    _JITTED[fn] = triton.jit(fn)
    module.tl = tl
    for name, value in list(vars(module).items()):
        if getattr(value, TRITON_HOOK, False):
            setattr(module, name, jitted(value))
    return _JITTED[fn]
