"""Learning-rate schedules (Keras's keras.optimizers.schedules): step -> learning rate."""

import math

from kcomp.errors import ArgumentError


class LearningRateSchedule:
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"class_name": type(self).__name__, "config": dict(vars(self))}


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps), the exponent floored if staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        if decay_steps <= 0:
            raise ArgumentError(f"Received: decay_steps={decay_steps}. Expected a positive integer.")
        self.initial_learning_rate, self.decay_steps, self.decay_rate = initial_learning_rate, decay_steps, decay_rate
        self.staircase, self.name = staircase, name

    def __call__(self, step):
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[i] while step <= boundaries[i] (and values[-1] after the last boundary)."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(values) != len(boundaries) + 1:
            raise ArgumentError(f"PiecewiseConstantDecay needs one more value than boundaries; received {len(boundaries)} boundaries and {len(values)} values.")
        self.boundaries, self.values, self.name = list(boundaries), list(values), name

    def __call__(self, step):
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]


class CosineDecay(LearningRateSchedule):
    """Cosine decay from initial_learning_rate (after an optional linear warmup) to alpha * it."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None, warmup_steps=0):
        if decay_steps <= 0:
            raise ArgumentError(f"Received: decay_steps={decay_steps}. Expected a positive integer.")
        self.initial_learning_rate, self.decay_steps, self.alpha = initial_learning_rate, decay_steps, alpha
        self.name, self.warmup_target, self.warmup_steps = name, warmup_target, warmup_steps

    def __call__(self, step):
        start = self.initial_learning_rate
        if self.warmup_target is not None and step < self.warmup_steps:
            return start + (self.warmup_target - start) * step / self.warmup_steps
        peak = self.warmup_target if self.warmup_target is not None else start
        done = min(max(step - self.warmup_steps, 0), self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1 + math.cos(math.pi * done))
        return peak * ((1 - self.alpha) * cosine + self.alpha)
