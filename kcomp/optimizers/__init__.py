"""Optimizers with Keras's names, arguments and defaults.

An optimizer owns its slots (momentum, Adam's m and v, ...) as tensors, one
set per trainable weight, and its step count. In the training step it emits
gradient clipping (clipnorm, clipvalue, global_clipnorm) and ONE
optimizer_update op for all parameters. The learning rate is an input of the
step, so a schedule changes it without rebuilding anything.

Each class is a thin Keras face on its algorithm's record (kcomp/ir/optim/):
the record has the hyper-parameters with Keras's defaults and checks, the
slots and the formulas; the class's constructor signature is made from it.
"""

import inspect

import torch

from kcomp.session import to_snake_case
from kcomp.errors import ArgumentError
from kcomp.ir.ops.optim import hyper_attr
from kcomp.ir.optim import get as algorithm_record
from kcomp.ir.optim.record import Algorithm, is_number as _is_number, positive as _positive
from kcomp.optimizers import schedules
from kcomp.optimizers.schedules import LearningRateSchedule


class Optimizer:
    record: Algorithm | None = None  # the algorithm (kcomp/ir/optim/<name>.py); set by each subclass

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "record" in vars(cls):
            cls.__init__ = _constructor(cls.record)

    def __init__(self, learning_rate, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None, **hyper):
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ArgumentError("Give at most one of clipnorm, clipvalue and global_clipnorm (Keras allows one).")
        self.hyper = self.record.resolve(hyper)
        if not isinstance(learning_rate, LearningRateSchedule):
            if not _is_number(learning_rate) or learning_rate < 0:
                raise ArgumentError(f"Received: learning_rate={learning_rate!r}. Expected a finite number >= 0 or a schedule.")
            learning_rate = float(learning_rate)
        self.learning_rate = learning_rate
        self.clipnorm = _positive("clipnorm", clipnorm, allow_none=True)
        self.clipvalue = _positive("clipvalue", clipvalue, allow_none=True)
        self.global_clipnorm = _positive("global_clipnorm", global_clipnorm, allow_none=True)
        self.name = name or to_snake_case(type(self).__name__)  # Keras's default name: AdamW -> adam_w
        self.iterations = 0
        self.slots: dict[str, list[torch.Tensor]] = {}  # weight path -> its slot tensors

    def __getattr__(self, name):
        """Hyper-parameters read as attributes, as on a Keras optimizer (opt.beta_1)."""
        hyper = self.__dict__.get("hyper", {})
        if name in hyper:
            return hyper[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def algorithm(self) -> str:
        return self.record.name

    # -- state ------------------------------------------------------------------
    @property
    def slots_per_param(self) -> int:
        return self.record.slot_count(self.hyper)

    def initial_slot(self, weight: torch.Tensor, index: int) -> torch.Tensor:
        return torch.full_like(weight, self.record.first_values(self.hyper)[index])

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

    def emit_update(self, b, params, grads, slots, lr, step, finite=None, scale=None):
        """One optimizer_update node; returns (new params, new slots per param). finite: a 0-d 0/1
        flag, 0 keeping every value as it was; scale: each gradient is divided by it first (a
        LossScaleOptimizer's; the update kernel does both: kcomp/ir/ops/optim.py)."""
        k = self.slots_per_param
        flat_slots = [s for per in slots for s in per]
        guards = [x for x in (finite, scale) if x is not None]
        outs = b.emit("optimizer_update", [*params, *grads, *flat_slots, lr, step, *guards],
                      algorithm=self.algorithm, count=len(params), hyper=hyper_attr(self.hyper),
                      skip=finite is not None, unscale=scale is not None)
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

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):  # a schedule, as get_config writes it
            schedule = getattr(schedules, lr["class_name"], None)
            if not (isinstance(schedule, type) and issubclass(schedule, LearningRateSchedule)):
                raise ArgumentError(f"Received: learning_rate={lr!r}, a schedule kcomp does not know.")
            config["learning_rate"] = schedule(**lr["config"])
        return cls(**config)


def _constructor(record: Algorithm):
    """__init__(self, learning_rate=<Keras default>, <the record's hyper-parameters with their defaults>,
    **kwargs) for a record's class: a real signature, which Keras users, inspect and the file readers
    (kcomp/saving) see."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
                   for name, default in [("learning_rate", record.learning_rate), *record.defaults.items()]]
    parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature(parameters)

    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        del values["self"]
        Optimizer.__init__(self, **values.pop("kwargs"), **values)

    __init__.__signature__ = signature
    __init__.__doc__ = f"{record.keras_class}: {record.doc}"
    return __init__


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


# One class per algorithm record: the Keras name, nothing else.
class SGD(Optimizer):
    record = algorithm_record("sgd")


class Adam(Optimizer):
    record = algorithm_record("adam")


class AdamW(Optimizer):
    record = algorithm_record("adamw")


class RMSprop(Optimizer):
    record = algorithm_record("rmsprop")


class Adagrad(Optimizer):
    record = algorithm_record("adagrad")


class Adadelta(Optimizer):
    record = algorithm_record("adadelta")


class Adamax(Optimizer):
    record = algorithm_record("adamax")


class Nadam(Optimizer):
    record = algorithm_record("nadam")


class Ftrl(Optimizer):
    record = algorithm_record("ftrl")


class Lion(Optimizer):
    record = algorithm_record("lion")


_CLASSES = (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, Nadam, Ftrl, Lion)
_BY_NAME = {name: cls for cls in _CLASSES for name in (cls.record.name, *cls.record.names)}


def get(identifier) -> Optimizer:
    from kcomp.optimizers.loss_scale import LossScaleOptimizer

    if isinstance(identifier, (Optimizer, LossScaleOptimizer)):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    if isinstance(identifier, dict) and "name" in identifier:  # the .k compile section: adam(learning_rate=0.01)
        cls = _BY_NAME.get(identifier["name"].lower())
        if cls is not None:
            return cls(*identifier.get("args", []), **identifier.get("kwargs", {}))
    from difflib import get_close_matches

    name = identifier if isinstance(identifier, str) else getattr(identifier, "get", lambda k, d=None: d)("name", identifier)
    # Of the close names, the fewest typing errors away ('adma' is 'adam', not 'adamax'; 'nadm' is 'nadam').
    near = sorted(get_close_matches(str(name).lower(), list(_BY_NAME), n=3), key=lambda c: _typos(str(name).lower(), c))
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ArgumentError(f"Received: optimizer={name!r}, which kcomp does not know.{hint} Known: {sorted(_BY_NAME)}.")


def _typos(a: str, b: str) -> int:
    """Edits from a to b (insert, delete, replace, swap two neighbours): optimal string alignment distance."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


from kcomp.optimizers.loss_scale import LossScaleOptimizer  # noqa: E402  (it reads this module's get)

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "LossScaleOptimizer", "Lion", "Nadam",
           "Optimizer", "RMSprop", "get", "schedules"]
