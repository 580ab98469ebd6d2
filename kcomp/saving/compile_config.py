"""Keras's compile_config: the optimizer, loss, loss weights and metrics, read and written.

Optimizers, schedules, losses and metrics resolve only through kcomp's
allow-list (kcomp/saving/allow_list.py).
"""

from kcomp import losses as losses_module, metrics as metrics_module, optimizers
from kcomp.errors import ArgumentError, KcompError
from kcomp.saving.allow_list import (
    OPTIMIZERS, SCHEDULES, SerializationError, classes_in, fit_kwargs, keras_object, plain_value, resolve,
)

_OPTIMIZER_BASE = {"weight_decay": None, "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                   "loss_scale_factor": None, "gradient_accumulation_steps": None}


def optimizer_to_keras(opt) -> dict:
    if isinstance(opt, optimizers.LossScaleOptimizer):  # its get_config has the inner one's, as Keras's
        return keras_object("keras.optimizers", "LossScaleOptimizer", opt.get_config())
    config = opt.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        config["learning_rate"] = keras_object("keras.optimizers.schedules", lr["class_name"], dict(lr["config"]))
    full = {"name": config.pop("name"), "learning_rate": config.pop("learning_rate"), **_OPTIMIZER_BASE}
    full.update(config)
    return keras_object("keras.optimizers", type(opt).__name__, full)


def optimizer_from_keras(value):
    if isinstance(value, str):
        return optimizers.get(value)
    if isinstance(value, dict) and value.get("class_name") == "LossScaleOptimizer":
        config = dict(value.get("config") or {})
        inner = optimizer_from_keras(config.pop("inner_optimizer", None))
        where = "the optimizer (LossScaleOptimizer)"
        try:
            return optimizers.LossScaleOptimizer(inner, **{k: plain_value(v, where) for k, v in config.items()})
        except KcompError as e:
            raise SerializationError(f"{where} in the file: {e}") from None
    cls = resolve(value, "the optimizer", OPTIMIZERS)
    where = f"the optimizer ({cls.__name__})"
    config = {k: plain_value(v, where) if k != "learning_rate" else v for k, v in (value.get("config") or {}).items()}
    lr = config.get("learning_rate")
    if isinstance(lr, dict):
        schedule = resolve(lr, f"{where}, learning_rate", SCHEDULES)
        config["learning_rate"] = schedule(**fit_kwargs(schedule, {k: plain_value(v, where) for k, v in (lr.get("config") or {}).items()}, where))
    if config.get("use_ema") is False:
        config.pop("ema_momentum", None)  # only read with use_ema
    try:
        return cls(**fit_kwargs(cls, config, where))
    except KcompError as e:
        raise SerializationError(f"{where} in the file: {e}") from None


def _each(value, convert):
    """None and names stay; a list (one per output) converts item by item; an object converts."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_each(v, convert) for v in value]
    return convert(value)


def _loss_to_keras(loss):
    if isinstance(loss, losses_module.Loss) and type(loss).__name__ in classes_in(losses_module, losses_module.Loss):
        return keras_object("keras.losses", type(loss).__name__, {**loss.get_config(), "dtype": None})
    raise SerializationError(
        f"The model's loss {getattr(loss, '__name__', loss)!r} is a function, which a Keras file cannot hold "
        "(loading never runs code from a file). Compile with a loss name such as 'mse' or a kcomp.losses class before saving."
    )


def _from_table(value, table: dict, what: str, fit: bool):
    """An instance of a kcomp loss or metric class named by a serialized Keras object."""
    cls = resolve(value, what, table)
    config = {k: plain_value(v, what) for k, v in (value.get("config") or {}).items()}
    if config.get("dtype") in (None, "float32"):
        config.pop("dtype", None)
    try:
        return cls(**(fit_kwargs(cls, config, f"{what} {cls.__name__}") if fit else config))
    except SerializationError:
        raise
    except (KcompError, TypeError) as e:
        raise SerializationError(f"{what} ({cls.__name__}) in the file: {e}") from None


def _loss_from_keras(value):
    # A loss's own arguments (from_logits, ...) pass through its **kwargs; the class checks them.
    return _from_table(value, classes_in(losses_module, losses_module.Loss), "the loss", fit=False)


def _metric_to_keras(metric):
    if isinstance(metric, metrics_module.Metric) and type(metric).__name__ in classes_in(metrics_module, metrics_module.Metric):
        # A metric's own arguments (AUC's curve, PrecisionAtRecall's recall, ...) where it lists them.
        config = metric.get_config() if hasattr(metric, "get_config") else {"name": metric.name, "dtype": "float32"}
        return keras_object("keras.metrics", type(metric).__name__, config)
    raise SerializationError(f"The metric {metric!r} cannot be written to a Keras file; compile with metric names such as 'accuracy'.")


def _metric_from_keras(value):
    return _from_table(value, classes_in(metrics_module, metrics_module.Metric), "the metric", fit=True)


def compile_config(model) -> dict:
    settings = model.compile_settings
    return {
        "optimizer": optimizer_to_keras(model.optimizer),
        "loss": _each(settings.get("loss"), _loss_to_keras),
        "loss_weights": settings.get("loss_weights"),
        "metrics": _each(settings.get("metrics"), _metric_to_keras),
        "weighted_metrics": _each(settings.get("weighted_metrics"), _metric_to_keras),
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def compile_from_config(model, config: dict) -> None:
    """model.compile(...) with what Keras's compile_config says: the optimizer, loss, loss weights,
    metrics and weighted metrics (run_eagerly, steps_per_execution and jit_compile do not change
    what a step computes, and kcomp compiles every step: they are not read)."""
    if not isinstance(config, dict):
        raise SerializationError(f"compile_config must be a dict, received {config!r}.")
    if isinstance(config.get("loss"), dict) and "class_name" not in config["loss"]:
        raise SerializationError("compile_config: losses given per output name (a dict) are not supported; give a list.")
    try:
        model.compile(
            optimizer=optimizer_from_keras(config.get("optimizer", "rmsprop")),
            loss=_each(config.get("loss"), _loss_from_keras),
            loss_weights=config.get("loss_weights"),
            metrics=_each(config.get("metrics"), _metric_from_keras),
            weighted_metrics=_each(config.get("weighted_metrics"), _metric_from_keras),
        )
    except SerializationError:
        raise
    except (KcompError, ArgumentError) as e:
        raise SerializationError(f"compile_config in the file: {e}") from None
