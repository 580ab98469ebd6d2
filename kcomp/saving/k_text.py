"""A model as `.k` text (grammar/README.md): `kcomp convert model.keras -o model.k`.

A Sequential model becomes a `model` block, any other a `graph` block that names
each value after the layer that makes it. Every argument that differs from the
layer's default is written, by Keras's argument name (the required leading ones
by position: `dense(8, activation=relu)`), so building the text gives the same
layers, and the same IR, as the model converted. What the language cannot say
(a layer called twice, a learning-rate schedule, a loss object with settings)
is refused with a message rather than dropped. Weights are not part of a .k
file; keep them in a .weights.h5 next to it.
"""

import inspect
import json
import re

import numpy as np

from kcomp import initializers, layers as kl, losses as losses_module
from kcomp.session import to_snake_case
from kcomp.dsl import layer_table
from kcomp.errors import KcompError
from kcomp.saving.keras_paths import is_model, model_calls
from kcomp.saving.compile_config import _OPTIMIZER_BASE, optimizer_to_keras

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"model", "graph", "output", "compile", "input", "true", "false", "none"}
# Keras's optimizer settings at their defaults, which a .k compile section leaves out.
_OPTIMIZER_DEFAULTS = {**_OPTIMIZER_BASE, "clipnorm": None, "clipvalue": None, "global_clipnorm": None}


class ConvertError(KcompError):
    """A model the .k language cannot express."""


def _value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and float(np.float32(v)) == v:
        return str(np.float32(v))  # a float32 Keras stored (0.05000000074505806) as the number written (0.05)
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return v if _NAME.fullmatch(v) and v not in _RESERVED else json.dumps(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise ConvertError(f"the value {v!r} has no .k form.")


def _initializer(init) -> str:
    alias = next((a for a, cls in initializers._BY_ALIAS.items() if cls is type(init)), None)
    if alias is None:
        raise ConvertError(f"the initializer {type(init).__name__} has no .k name.")
    defaults = type(init)().get_config()
    args = {k: v for k, v in init.get_config().items() if defaults.get(k, object()) != v}
    return f"{alias}(" + ", ".join(f"{k}={_value(v)}" for k, v in args.items()) + ")"


def _regularizer(config: dict) -> str:
    name = {"L1": "l1", "L2": "l2", "L1L2": "l1_l2"}[config["class_name"]]
    return f"{name}(" + ", ".join(f"{k}={_value(v)}" for k, v in config["config"].items()) + ")"


def _defaults(cls) -> dict:
    out = {}
    for klass in reversed(cls.__mro__):
        if klass is object or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.default is not p.empty:
                out[p.name] = p.default
    return out


def _is_default(key, value, default, layer) -> bool:
    if key.endswith("_initializer") and isinstance(default, str):
        return value == initializers.serialize(initializers.get(default))
    if key in ("activation", "recurrent_activation") and default is None:
        return value == "linear"
    if key == "dtype":
        return value == "float32"
    if key == "data_format":
        return value in (None, "channels_last")
    if key == "axis" and isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0] == default  # LayerNormalization: Keras writes [-1] for -1
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return tuple(value) == tuple(default)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, (tuple, list)):
        return bool(value) and all(v == default for v in value)  # strides=1 is (1, 1) in a Conv2D's config
    if key == "strides" and default is None:  # pooling: strides default to the pool size
        return tuple(value) == tuple(getattr(layer, "pool_size", ()))
    return value == default and type(value) is type(default) or (value is None and default is None)


def layer_call(layer, inputs: list[str]) -> str:
    """`dense(x, 8, activation=relu)`: the layer with its non-default arguments."""
    cls = type(layer)
    if is_model(layer):
        raise ConvertError(f'"{layer.name}" is a model inside the model; .k files hold layers only. Convert it on its own.')
    word = to_snake_case(cls.__name__).replace("re_lu", "relu")
    if layer_table.LAYERS.get(word) is not cls:
        raise ConvertError(f'layer "{layer.name}" is a {cls.__name__}, which the .k language has no name for.')
    config = layer.get_config()
    for key in ("name", "batch_input_shape", "trainable", "input_length"):
        config.pop(key, None)
    if not layer.trainable:
        config["trainable"] = False
    defaults = _defaults(cls)
    required = [p.name for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
                if p.default is p.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    parts = list(inputs)
    for name in required:
        if name == "layer" and isinstance(layer, kl.TimeDistributed):  # time_distributed(dense(8))
            config.pop(name)
            parts.append(layer_call(layer.layer, []))
            continue
        if name == "layer" and isinstance(layer, kl.Bidirectional):  # bidirectional(lstm(8))
            config.pop(name)
            _check_derived_backward(layer)
            config.pop("backward_layer")
            parts.append(layer_call(layer.forward_layer, []))
            continue
        value = _plain(name, config.pop(name))
        # A word by position could be read as a value's name in a graph: words go by keyword.
        parts.append(f"{name}={_value(value)}" if isinstance(value, str) else _value(value))
    for key, value in config.items():
        if key in defaults and _is_default(key, value, defaults[key], layer):
            continue
        parts.append(f"{key}={_plain_text(key, value)}")
    return f"{word}(" + ", ".join(parts) + ")"


def _check_derived_backward(layer) -> None:
    """A Bidirectional's .k form names one layer: its backward layer must be the copy Bidirectional
    makes of it (reading the sequence the other way), not one given on its own."""
    forward, backward = layer.forward_layer.get_config(), layer.backward_layer.get_config()
    for config in (forward, backward):
        config.pop("name")
        config.pop("go_backwards")
    if type(layer.forward_layer) is not type(layer.backward_layer) or forward != backward:
        raise ConvertError(f'layer "{layer.name}" is a Bidirectional with its own backward_layer, which the .k '
                           "language cannot write; save it as a .keras file instead.")


def _plain(key, value):
    return tuple(value) if isinstance(value, list) and key in ("target_shape", "dims") else value


def _plain_text(key, value) -> str:
    if key.endswith("_initializer") and isinstance(value, dict):
        return _initializer(initializers.get(value))
    if key.endswith("_regularizer") and isinstance(value, dict):
        return _regularizer(value)
    return _value(_plain(key, value))


def _compile_lines(model) -> list[str]:
    if model.optimizer is None:
        return []
    opt = optimizer_to_keras(model.optimizer)
    name, config = opt["class_name"].lower(), dict(opt["config"])
    if isinstance(config["learning_rate"], dict):
        raise ConvertError("the optimizer's learning-rate schedule has no .k form; convert with a fixed learning rate.")
    config.pop("name")
    hyper = {k: v for k, v in config.items() if _OPTIMIZER_DEFAULTS.get(k, object()) != v}
    defaults = _defaults(type(model.optimizer))
    hyper = {k: v for k, v in hyper.items() if k not in defaults or defaults[k] != v}
    lines = [f"    optimizer = {name}(" + ", ".join(f"{k}={_value(v)}" for k, v in hyper.items()) + ")"]
    settings = model.compile_settings
    if settings.get("weighted_metrics"):
        raise ConvertError("weighted_metrics have no .k form (a compile section takes optimizer, loss, metrics, loss_weights).")
    lines.append(f"    loss = {_value(_loss_name(settings.get('loss')))}")
    if settings.get("metrics"):
        metrics = settings["metrics"]
        if not all(isinstance(m, str) for m in (metrics if isinstance(metrics, (list, tuple)) else [metrics])):
            raise ConvertError("metrics given as objects have no .k form; compile with metric names.")
        lines.append(f"    metrics = {_value(list(metrics) if isinstance(metrics, (list, tuple)) else [metrics])}")
    if settings.get("loss_weights") is not None:
        lines.append(f"    loss_weights = {_value(list(settings['loss_weights']))}")
    return ["  compile {", *lines, "  }"]


def _loss_name(loss):
    if isinstance(loss, (list, tuple)):
        return [_loss_name(l) for l in loss]
    if isinstance(loss, str):
        return loss
    if isinstance(loss, losses_module.Loss):
        plain = losses_module.get(loss.name) if isinstance(loss.name, str) else None
        if plain is not None and type(plain) is type(loss) and plain.get_config() == loss.get_config():
            return loss.name
    raise ConvertError(f"the loss {loss!r} has settings the .k language cannot hold; compile with a loss name.")


def _input_call(layer) -> str:
    shape = ", ".join(_value(d) for d in layer.batch_shape[1:])
    policy = layer.dtype_policy.name
    extra = "" if policy == "float32" else f", dtype={_value(policy)}"
    return f"input({shape}{extra})"


def model_to_k(model) -> str:
    """The model as the text of one `.k` block (sequential or graph)."""
    from kcomp.models.sequential import Sequential

    model._require_built("its .k text")
    name = _identifier(model.name, set())
    if isinstance(model, Sequential):
        lines = [f"model {name} {{", f"  {_input_call(model.inputs[0].call.layer)}"]
        lines += [f"  {layer_call(layer, [])}" for layer in model.layers]
    else:
        lines = [f"graph {name} {{"]
        names: dict[int, str] = {}
        used: set[str] = set()
        for t in model.inputs:
            names[id(t)] = _identifier(t.call.layer.name, used)
            lines.append(f"  {names[id(t)]} = {_input_call(t.call.layer)}")
        seen_layers: set[int] = set()
        for call in model_calls(model):
            if isinstance(call.layer, kl.InputLayer):
                continue
            if id(call.layer) in seen_layers:
                raise ConvertError(f'layer "{call.layer.name}" is called twice (a shared layer); a .k graph makes one layer per line.')
            seen_layers.add(id(call.layer))
            ins = call.inputs if isinstance(call.inputs, (list, tuple)) else [call.inputs]
            outs = call.outputs if isinstance(call.outputs, (list, tuple)) else [call.outputs]
            targets = [_identifier(call.layer.name if len(outs) == 1 else f"{call.layer.name}_{i}", used) for i in range(len(outs))]
            for t, target in zip(outs, targets):
                names[id(t)] = target
            lines.append(f"  {', '.join(targets)} = {layer_call(call.layer, [names[id(t)] for t in ins])}")
        lines.append(f"  output {', '.join(names[id(t)] for t in model.outputs)}")
    lines += _compile_lines(model)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _identifier(name: str, used: set) -> str:
    base = re.sub(r"\W", "_", name)
    if not _NAME.fullmatch(base) or base in _RESERVED:
        base = f"v_{base}"
    out, n = base, 1
    while out in used:
        out, n = f"{base}_{n}", n + 1
    used.add(out)
    return out
