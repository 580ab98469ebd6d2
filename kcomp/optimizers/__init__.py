"""Optimizers with Keras's names, arguments and defaults.

An optimizer owns its slots (momentum, Adam's m and v, ...) as tensors, one
set per trainable weight, and its step count. In the training step it emits
gradient clipping (clipnorm, clipvalue, global_clipnorm) and ONE
optimizer_update op for all parameters (kcomp/ir/ops/optim.py has the
formulas). The learning rate is an input of the step, so a schedule changes
it without rebuilding anything.
"""

import math

import numpy as np
import torch

from kcomp.errors import ArgumentError
from kcomp.ir.ops.optim import slots_per_param
from kcomp.optimizers import schedules
from kcomp.optimizers.schedules import LearningRateSchedule


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def _positive(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not _is_number(value) or value <= 0:
        raise ArgumentError(f"Received: {name}={value!r}. Expected a positive number{' or None' if allow_none else ''}.")
    return float(value)


def _in_range(name, value, low, high, high_included=False) -> float:
    """A finite number in [low, high) (or [low, high]); NaN, inf and strings are refused by name."""
    if not _is_number(value) or value < low or value > high or (value == high and not high_included):
        bound = f"[{low}, {high}]" if high_included else f"[{low}, {high})"
        raise ArgumentError(f"Received: {name}={value!r}. Expected a number in {bound}.")
    return float(value)


def _non_negative(name, value) -> float:
    return _in_range(name, value, 0.0, math.inf)


class Optimizer:
    algorithm = ""

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None, **hyper):
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ArgumentError("Give at most one of clipnorm, clipvalue and global_clipnorm (Keras allows one).")
        if not isinstance(learning_rate, LearningRateSchedule):
            if not _is_number(learning_rate) or learning_rate < 0:
                raise ArgumentError(f"Received: learning_rate={learning_rate!r}. Expected a finite number >= 0 or a schedule.")
            learning_rate = float(learning_rate)
        self.learning_rate = learning_rate
        self.clipnorm = _positive("clipnorm", clipnorm, allow_none=True)
        self.clipvalue = _positive("clipvalue", clipvalue, allow_none=True)
        self.global_clipnorm = _positive("global_clipnorm", global_clipnorm, allow_none=True)
        self.name = name or type(self).__name__.lower()
        self.hyper = hyper
        self.iterations = 0
        self.slots: dict[str, list[torch.Tensor]] = {}  # weight path -> its slot tensors

    # -- state ------------------------------------------------------------------
    @property
    def slots_per_param(self) -> int:
        h = self.hyper
        return slots_per_param(self.algorithm, h.get("momentum", 0.0), h.get("amsgrad", False), h.get("centered", False))

    def initial_slot(self, weight: torch.Tensor, index: int) -> torch.Tensor:
        return torch.zeros_like(weight)

    def build(self, weights) -> None:
        """Create the slots of every weight not seen yet (Keras builds them on the first step)."""
        for w in weights:
            if w.path not in self.slots:
                self.slots[w.path] = [self.initial_slot(w.value, j) for j in range(self.slots_per_param)]

    def current_learning_rate(self) -> float:
        if isinstance(self.learning_rate, LearningRateSchedule):
            return float(self.learning_rate(self.iterations))
        return float(self.learning_rate)

    # -- the training step's nodes ------------------------------------------------
    def clip(self, b, grads):
        """Keras's clipping, as IR ops on the gradients."""
        if self.clipvalue is not None:
            return [_clip_value(b, g, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            return [_scale_to_norm(b, g, _norm(b, [g]), self.clipnorm) for g in grads]
        if self.global_clipnorm is not None:
            norm = _norm(b, grads)
            return [_scale_to_norm(b, g, norm, self.global_clipnorm) for g in grads]
        return grads

    def emit_update(self, b, params, grads, slots, lr, step):
        """One optimizer_update node; returns (new params, new slots per param)."""
        k = self.slots_per_param
        flat_slots = [s for per in slots for s in per]
        outs = b.emit("optimizer_update", [*params, *grads, *flat_slots, lr, step],
                      algorithm=self.algorithm, count=len(params), **self.hyper)
        n = len(params)
        return list(outs[:n]), [list(outs[n + i * k : n + (i + 1) * k]) for i in range(n)]

    def get_config(self) -> dict:
        lr = self.learning_rate
        return {
            "name": self.name,
            "learning_rate": lr.get_config() if isinstance(lr, LearningRateSchedule) else lr,
            "clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm,
            **self.hyper,
        }


def _norm(b, grads):
    total = None
    for g in grads:
        s = b.emit1("sum", [b.emit1("square", [g])])
        total = s if total is None else b.emit1("add", [total, s])
    return b.emit1("sqrt", [total])


def _scale_to_norm(b, g, norm, limit):
    """g * limit / max(norm, limit): unchanged when the norm is within the limit."""
    c = b.emit1("constant", [], value=limit, dtype=g.dtype)
    return b.emit1("mul", [g, b.emit1("div", [c, b.emit1("maximum", [norm, c])])])


def _clip_value(b, g, v):
    low = b.emit1("constant", [], value=-v, dtype=g.dtype)
    high = b.emit1("constant", [], value=v, dtype=g.dtype)
    return b.emit1("minimum", [b.emit1("maximum", [g, low]), high])


class SGD(Optimizer):
    algorithm = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        momentum = _in_range("momentum", momentum, 0.0, 1.0, high_included=True)
        super().__init__(learning_rate, momentum=momentum, nesterov=bool(nesterov), **kwargs)


class Adam(Optimizer):
    algorithm = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, **_betas(beta_1, beta_2, epsilon), amsgrad=bool(amsgrad), **kwargs)


def _betas(beta_1, beta_2, epsilon) -> dict:
    return {"beta_1": _in_range("beta_1", beta_1, 0.0, 1.0), "beta_2": _in_range("beta_2", beta_2, 0.0, 1.0),
            "epsilon": _non_negative("epsilon", epsilon)}


class AdamW(Optimizer):
    algorithm = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, weight_decay=_non_negative("weight_decay", weight_decay),
                         **_betas(beta_1, beta_2, epsilon), amsgrad=bool(amsgrad), **kwargs)


class RMSprop(Optimizer):
    algorithm = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, rho=_in_range("rho", rho, 0.0, 1.0), momentum=_in_range("momentum", momentum, 0.0, 1.0, True),
                         epsilon=_non_negative("epsilon", epsilon), centered=bool(centered), **kwargs)


class Adagrad(Optimizer):
    algorithm = "adagrad"

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        self.initial_accumulator_value = _non_negative("initial_accumulator_value", initial_accumulator_value)
        super().__init__(learning_rate, epsilon=_non_negative("epsilon", epsilon), **kwargs)

    def initial_slot(self, weight, index):
        return torch.full_like(weight, self.initial_accumulator_value)


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}


def get(identifier) -> Optimizer:
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict) and "name" in identifier:  # the .k compile section: adam(learning_rate=0.01)
        cls = _BY_NAME.get(identifier["name"].lower())
        if cls is not None:
            return cls(*identifier.get("args", []), **identifier.get("kwargs", {}))
    from difflib import get_close_matches

    name = identifier if isinstance(identifier, str) else getattr(identifier, "get", lambda k, d=None: d)("name", identifier)
    near = get_close_matches(str(name).lower(), list(_BY_NAME), n=1)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ArgumentError(f"Received: optimizer={name!r}, which kcomp does not know.{hint} Known: {sorted(_BY_NAME)}.")


__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "get", "schedules"]
