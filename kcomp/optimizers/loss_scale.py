"""Keras 3's LossScaleOptimizer: dynamic loss scaling around another optimizer (mixed_float16).

As Keras's (keras/src/optimizers/loss_scale_optimizer.py): the loss is multiplied by
`dynamic_scale` before the gradients are taken and each gradient divided by it before the inner
optimizer's update. A step whose (scaled) gradients hold an inf or NaN is skipped (weights, slots
and the iteration count stay as they were), the scale halves and the count of good steps restarts;
on the `dynamic_growth_steps`-th good step in a row the scale doubles and the count restarts.

All of it is nodes of the training step (`emit_scaled_update`): the scale and the good-step count
are training state (TrainState names LOSS_SCALE, LOSS_SCALE_STEPS) that the step reads and
writes on the device, so no step reads anything back to the host. Because a skipped step does
not advance the iteration count, the count lives on the device too: `iterations` reads it from
there when asked (a learning-rate schedule asks once per step).
"""

import torch

from kcomp.errors import ArgumentError

LOSS_SCALE = "optimizer/dynamic_scale"  # Keras's variable names
LOSS_SCALE_STEPS = "optimizer/step_counter"

# Keras's base-optimizer arguments a LossScaleOptimizer config may carry, only at these values.
_BASE_DEFAULTS = {"weight_decay": None, "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
                  "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
                  "gradient_accumulation_steps": None}


class LossScaleOptimizer:
    """`LossScaleOptimizer(inner_optimizer, initial_scale=2**15, dynamic_growth_steps=2000)`."""

    counts_on_device = True  # TrainState: the device's iteration count is the true one

    def __init__(self, inner_optimizer, initial_scale=2.0**15, dynamic_growth_steps=2000, name=None, **kwargs):
        from kcomp import optimizers

        if not kwargs.pop("dynamic", True):
            raise ArgumentError("LossScaleOptimizer no longer supports `dynamic=False` (Keras 3). Instead, set "
                                "`loss_scale_factor` on the inner optimizer.")
        for key, default in _BASE_DEFAULTS.items():
            if key in kwargs and kwargs.pop(key) != default:
                raise ArgumentError(f"LossScaleOptimizer does not support `{key}`. Instead, set `{key}` on the inner_optimizer.")
        if kwargs:
            raise ArgumentError(f"LossScaleOptimizer does not support arguments: `{'`, `'.join(sorted(kwargs))}`.")
        if isinstance(inner_optimizer, LossScaleOptimizer):
            raise ArgumentError("Received: inner_optimizer=LossScaleOptimizer(...). Wrap a plain optimizer once.")
        self.inner_optimizer = optimizers.get(inner_optimizer)
        if isinstance(initial_scale, bool) or not isinstance(initial_scale, (int, float)) or not initial_scale > 0:
            raise ArgumentError(f"Received: initial_scale={initial_scale!r}. Expected a positive number (Keras: 2**15).")
        if isinstance(dynamic_growth_steps, bool) or not isinstance(dynamic_growth_steps, int) or dynamic_growth_steps < 1:
            raise ArgumentError(f"Received: dynamic_growth_steps={dynamic_growth_steps!r}. Expected an int >= 1 (Keras: 2000).")
        self.initial_scale = float(initial_scale)
        self.dynamic_growth_steps = dynamic_growth_steps
        self.name = name or "loss_scale_optimizer"
        # Keras's two variables: float32 scale, and the good steps since the scale last changed
        # (an int in Keras; a float32 here, exact to 2**24, as kcomp's iteration count).
        self.dynamic_scale = torch.tensor(self.initial_scale, dtype=torch.float32)
        self.step_counter = torch.tensor(0.0, dtype=torch.float32)
        self.device_count = None  # TrainState sets it: the device's iteration count, read when asked

    # -- the inner optimizer's face (slots, learning rate, count are its own, as in Keras) --------
    def __getattr__(self, name):
        inner = self.__dict__.get("inner_optimizer")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def iterations(self) -> int:
        if self.device_count is not None:  # a host read, only when someone asks
            self.inner_optimizer.iterations = int(self.device_count().item())
        return self.inner_optimizer.iterations

    @iterations.setter
    def iterations(self, value) -> None:
        self.device_count = None  # the next step writes this count to the device
        self.inner_optimizer.iterations = int(value)

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        self.inner_optimizer.learning_rate = value

    def current_learning_rate(self) -> float:
        if not isinstance(self.inner_optimizer.learning_rate, (int, float)):  # a schedule reads the count
            return float(self.inner_optimizer.learning_rate(self.iterations))
        return float(self.inner_optimizer.learning_rate)

    def scale_loss(self, loss):
        """Keras's scale_loss, on concrete numbers: loss * the current scale."""
        return loss * float(self.dynamic_scale)

    def get_config(self) -> dict:
        from kcomp.saving.compile_config import optimizer_to_keras

        return {"name": self.name, "inner_optimizer": optimizer_to_keras(self.inner_optimizer),
                "initial_scale": self.initial_scale, "dynamic_growth_steps": self.dynamic_growth_steps}

    # -- the training step's nodes -----------------------------------------------------------
    def emit_scaled_update(self, b, scale, good_steps, params, grads, slots, lr, done, step):
        """Keras's apply on scaled gradients, as nodes: (new params, new slots per param, new
        iteration count, new scale, new good-step count). `scale`, `good_steps` and `done` (the
        iterations before this step; `step` = done + 1) are the step's state parameters."""
        finite = _all_finite(b, grads)
        inner = self.inner_optimizer
        # The update divides by the scale as it loads each gradient and keeps every value on a skipped
        # step (one launch); clipping reads the unscaled gradients, so with it the division is ops.
        clipped = any(x is not None for x in (inner.clipvalue, inner.clipnorm, inner.global_clipnorm))
        unscaled = [b.emit1("div", [g, scale]) for g in grads] if clipped else grads
        new_params, new_slots = inner.emit_update(b, params, inner.clip(b, unscaled), slots, lr, step,
                                                  finite=finite, scale=None if clipped else scale)
        count = _select(b, finite, step, done)
        grow = b.emit1("equal", [good_steps, _const(b, self.dynamic_growth_steps - 1)])  # 1 on the doubling step
        kept_scale = b.emit1("mul", [scale, b.emit1("add", [_const(b, 1.0), grow])])  # x2 when grow, else x1
        new_scale = _select(b, finite, kept_scale, b.emit1("mul", [scale, _const(b, 0.5)]))
        counted = b.emit1("mul", [b.emit1("add", [good_steps, _const(b, 1.0)]), b.emit1("sub", [_const(b, 1.0), grow])])
        new_good_steps = b.emit1("mul", [counted, finite])  # counted (0 after a doubling) if finite, else 0
        return new_params, new_slots, count, new_scale, new_good_steps


def _const(b, value):
    return b.emit1("constant", [], value=float(value), dtype="float32")


def _all_finite(b, grads):
    """1.0 when every element of every gradient is finite, else 0.0 (a float32 scalar)."""
    bad = None
    for g in grads:
        flag = g if g.dtype == "float32" else b.emit1("cast", [g], dtype="float32")
        not_finite = b.emit1("sub", [_const(b, 1.0), b.emit1("is_finite", [flag])])
        worst = b.emit1("max", [not_finite], axes=None, keepdims=False)
        bad = worst if bad is None else b.emit1("maximum", [bad, worst])
    return b.emit1("sub", [_const(b, 1.0), bad])


def _select(b, flag, if_one, if_zero):
    """`if_one` where the 0/1 scalar `flag` is 1, else `if_zero`; exact, and NaN or inf in the side
    not chosen does not leak (a * flag would turn an inf into NaN)."""
    one = b.emit1("zeros_where_masked", [if_one, flag])
    zero = b.emit1("zeros_where_masked", [if_zero, b.emit1("sub", [_const(b, 1.0), flag])])
    return b.emit1("add", [one, zero])
