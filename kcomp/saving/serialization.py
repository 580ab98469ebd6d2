"""Keras 3's model configs (config.json, get_config, to_json), read and written by kcomp.

Writing turns kcomp's layers, optimizer, loss and metrics into Keras's
serialized form ({"module", "class_name", "config", "registered_name"}), with a
functional model's connections in Keras's `inbound_nodes` format
(keras/src/models/functional.py, keras/src/ops/node.py): each call's arguments,
a tensor written as {"class_name": "__keras_tensor__", "config": {"shape",
"dtype", "keras_history": [layer name, node index, tensor index]}}.

Reading is safe: nothing is imported or evaluated. A serialized object resolves
only through the tables below, by its class name, after its module is checked
to be Keras's ("keras" or "keras.*") and its registered_name to be absent or the
class name. Anything else (`os.system`, `builtins.eval`, a Lambda layer, a
custom registered object) is refused with a SerializationError naming it.
Keras-only arguments are dropped when they hold Keras's default (None, False,
...), and refused otherwise, so a loaded model never quietly computes
something else.
"""

import inspect
import json

from kcomp import initializers, layers as kl, losses as losses_module, metrics as metrics_module, optimizers, regularizers
from kcomp.activations import ACTIVATIONS
from kcomp.errors import ArgumentError, KcompError
from kcomp.optimizers import schedules
from kcomp.saving.keras_h5 import is_model, keras_class_name, model_calls

KERAS_VERSION = "3.15.1"  # the Keras version kcomp's files are checked against (tests/test_keras_files.py)


class SerializationError(KcompError):
    """A model config kcomp will not build: an unknown or unsafe class, or settings it does not support."""


# -- the allow-list: class name -> kcomp class ----------------------------------------
LAYERS = {
    cls.__name__: cls
    for cls in (
        kl.Activation, kl.Add, kl.AveragePooling2D, kl.Average, kl.BatchNormalization, kl.Concatenate, kl.Conv2D,
        kl.Dense, kl.Dropout, kl.Embedding, kl.Flatten, kl.GRU, kl.GlobalAveragePooling2D, kl.GlobalMaxPooling2D,
        kl.InputLayer, kl.LSTM, kl.LayerNormalization, kl.LeakyReLU, kl.MaxPooling2D, kl.Maximum, kl.Multiply,
        kl.Permute, kl.ReLU, kl.Reshape, kl.SimpleRNN, kl.Softmax, kl.Subtract,
    )
}
INITIALIZERS = dict(initializers._BY_CLASS)
REGULARIZERS = {"L1": regularizers.L1, "L2": regularizers.L2, "L1L2": regularizers.L1L2}
OPTIMIZERS = {cls.__name__: cls for cls in (optimizers.SGD, optimizers.Adam, optimizers.AdamW, optimizers.RMSprop, optimizers.Adagrad)}
SCHEDULES = {cls.__name__: cls for cls in (schedules.ExponentialDecay, schedules.PiecewiseConstantDecay, schedules.CosineDecay)}
MODELS = ("Sequential", "Functional", "Model")


def _classes_in(module, base) -> dict:
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, base) and obj is not base and not name.startswith("_")}


# Keras-only arguments whose value is not kcomp's plain behaviour when they differ from these defaults.
_KERAS_DEFAULTS = {"renorm_momentum": 0.99, "use_cudnn": "auto", "ema_momentum": 0.99, "steps_per_execution": 1}


# -- checking serialized objects --------------------------------------------------------
def _describe(obj: dict) -> str:
    module, name = obj.get("module"), obj.get("class_name")
    text = f"{module}.{name}" if module else str(name)
    if obj.get("registered_name") not in (None, name):
        text += f" (registered_name={obj.get('registered_name')!r})"
    if name in ("function", "__lambda__") and obj.get("config") is not None:
        text += f" with config {str(obj.get('config'))[:60]!r}"
    return text


def _refuse(obj, where: str, table: dict | tuple):
    known = ", ".join(sorted(table))
    raise SerializationError(
        f"{where}: the file names {_describe(obj) if isinstance(obj, dict) else repr(obj)}, which kcomp does not load. "
        f"kcomp builds only its own Keras objects ({known}); loading never runs code from a file. "
        "Rebuild that part with kcomp's layers, or remove it before saving."
    )


def _resolve(obj, where: str, table: dict | tuple):
    """The table's entry for a serialized Keras object, after checking where it claims to come from."""
    if not isinstance(obj, dict) or not isinstance(obj.get("class_name"), str):
        raise SerializationError(f"{where}: expected a serialized Keras object (a dict with class_name), received {str(obj)[:80]!r}.")
    module, name, registered = obj.get("module"), obj["class_name"], obj.get("registered_name")
    if module is not None and not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
        _refuse(obj, where, table)
    if registered not in (None, name) or name not in table:
        _refuse(obj, where, table)
    if not isinstance(obj.get("config", {}), (dict, type(None))):
        _refuse(obj, where, table)
    return table[name] if isinstance(table, dict) else name


def _accepted(cls) -> set[str]:
    """Keyword arguments cls() takes, following **kwargs up the classes it passes them to."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _fit_kwargs(cls, config: dict, where: str) -> dict:
    """config's entries cls takes; Keras-only entries dropped when they hold Keras's default, else refused."""
    accepted = _accepted(cls)
    kwargs = {}
    for key, value in config.items():
        if key in accepted:
            kwargs[key] = value
        elif not (value is None or value is False or _KERAS_DEFAULTS.get(key, object()) == value):
            raise SerializationError(
                f"{where}: {key}={value!r} is a Keras setting kcomp's {cls.__name__} does not support "
                f"(kcomp takes {sorted(accepted)}). Set it to its default in Keras before saving."
            )
    return kwargs


def _value(value, where: str):
    """A plain config value: tuples come back from Keras's {"class_name": "__tuple__"}; no other object is allowed."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and set(value) <= {"class_name", "config"}:
            return tuple(_value(v, where) for v in (value.get("config") or {}).get("value", []))
        _refuse(value, where, ("__tuple__",))
    if isinstance(value, list):
        return [_value(v, where) for v in value]
    if isinstance(value, tuple):  # get_config()'s dict before JSON
        return tuple(_value(v, where) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise SerializationError(f"{where}: unexpected value {value!r} in the config.")


def _dtype(value, where: str):
    if isinstance(value, dict):
        _resolve(value, where, ("DTypePolicy", "FloatDTypePolicy"))
        return (value.get("config") or {}).get("name")
    return value


def _initializer(value, where: str):
    if not isinstance(value, dict):
        return value  # a name: initializers.get checks it
    cls = _resolve(value, where, INITIALIZERS)
    return cls(**_fit_kwargs(cls, {k: _value(v, where) for k, v in (value.get("config") or {}).items()}, where))


def _regularizer(value, where: str):
    if not isinstance(value, dict):
        return value
    cls = _resolve(value, where, REGULARIZERS)
    return cls(**_fit_kwargs(cls, {k: _value(v, where) for k, v in (value.get("config") or {}).items()}, where))


def _activation(value, where: str):
    if isinstance(value, dict):  # Keras writes its own activations by name; a dict is a custom function
        _refuse(value, where, tuple(ACTIVATIONS))
    if value is not None and value not in ACTIVATIONS and value not in ("swish", "hard_swish"):
        raise SerializationError(f"{where}: activation {value!r} is not one of kcomp's activations {sorted(ACTIVATIONS)}.")
    return value


def _config_entry(key: str, value, where: str):
    where = f"{where}, {key}"
    if key == "dtype":
        return _dtype(value, where)
    if key.endswith("initializer"):
        return _initializer(value, where)
    if key.endswith("regularizer"):
        return _regularizer(value, where)
    if key in ("activation", "recurrent_activation"):
        return _activation(value, where)
    return _value(value, where)


# -- layers ---------------------------------------------------------------------------
def layer_from_keras(entry) -> kl.Layer:
    """A kcomp layer from Keras's serialized layer ({"module": "keras.layers", "class_name": "Dense", ...})."""
    name = entry.get("config", {}).get("name") if isinstance(entry, dict) and isinstance(entry.get("config"), dict) else None
    where = f"layer {name!r}" if name else "a layer"
    if isinstance(entry, dict) and entry.get("class_name") in MODELS:  # a nested model: one layer of this one
        _resolve(entry, where, MODELS)
        return model_from_config({k: v for k, v in entry.items() if k != "compile_config"})
    cls = _resolve(entry, where, LAYERS)
    config = {k: _config_entry(k, v, where) for k, v in (entry.get("config") or {}).items()}
    try:
        return cls(**_fit_kwargs(cls, config, f"{where} ({cls.__name__})"))
    except SerializationError:
        raise
    except KcompError as e:
        raise SerializationError(f"{where} ({cls.__name__}) in the file: {e}") from None


def _keras_object(module: str, class_name: str, config: dict) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dtype_policy(dtype: str) -> dict:
    return _keras_object("keras", "DTypePolicy", {"name": dtype})


def _encode_entry(key: str, value):
    if isinstance(value, dict) and set(value) == {"class_name", "config"}:
        if key.endswith("initializer"):
            return _keras_object("keras.initializers", value["class_name"], dict(value["config"]))
        if key.endswith("regularizer"):
            return _keras_object("keras.regularizers", value["class_name"], dict(value["config"]))
    if isinstance(value, tuple):
        return list(value)
    return value


_NO_CONSTRAINTS = {"kernel_constraint": None, "bias_constraint": None}
_RNN_EXTRA = {**_NO_CONSTRAINTS, "recurrent_constraint": None, "zero_output_for_mask": False}
# Keras-only arguments Keras writes with every layer of a class, at the values kcomp computes with.
_KERAS_EXTRA = {
    "Dense": {**_NO_CONSTRAINTS, "quantization_config": None},
    "Conv2D": _NO_CONSTRAINTS,
    "Embedding": {"embeddings_constraint": None, "activity_regularizer": None, "quantization_config": None},
    "BatchNormalization": {"beta_constraint": None, "gamma_constraint": None, "renorm": False, "renorm_clipping": None,
                           "renorm_momentum": 0.99},
    "LayerNormalization": {"rms_scaling": False, "beta_constraint": None, "gamma_constraint": None},
    "LSTM": {**_RNN_EXTRA, "seed": None}, "GRU": {**_RNN_EXTRA, "seed": None}, "SimpleRNN": _RNN_EXTRA,
}


def layer_to_keras(layer) -> dict:
    """Keras's serialized form of a kcomp layer (what keras.saving.serialize_keras_object writes)."""
    if is_model(layer):
        return serialize_model(layer, include_compile=False)
    cls_name = type(layer).__name__
    if LAYERS.get(cls_name) is not type(layer):
        raise SerializationError(
            f'Layer "{layer.name}" is a {cls_name}, which Keras files cannot name (kcomp writes only its own Keras '
            f"layers: {sorted(LAYERS)}). Save its weights with save_weights instead."
        )
    config = {k: _encode_entry(k, v) for k, v in layer.get_config().items()}
    config.pop("batch_input_shape", None)  # the model's InputLayer carries the shape
    if isinstance(layer, kl.InputLayer):
        config = {"batch_shape": list(layer.batch_shape), "dtype": layer.dtype, "sparse": False, "ragged": False,
                  "name": layer.name, "optional": False}
    else:
        config["dtype"] = _dtype_policy(layer.dtype)
    if isinstance(layer, kl.Embedding):
        config.pop("input_length", None)  # Keras 3 has none
    if isinstance(layer, kl.Dense) and config.get("activity_regularizer") is None:
        config.pop("activity_regularizer", None)  # Keras's Dense writes it only when set
    for key, value in _KERAS_EXTRA.get(cls_name, {}).items():
        config.setdefault(key, value)
    if "data_format" in config and config["data_format"] is None:
        config["data_format"] = "channels_last"
    return _keras_object("keras.layers", cls_name, config)


# -- models -----------------------------------------------------------------------------
def _calls_in_model(model) -> dict[int, int]:
    """id(call) -> its node index: its place among its layer's calls that belong to the model."""
    calls = model_calls(model)
    in_model = {id(c) for c in calls}
    index = {}
    for layer in {id(c.layer): c.layer for c in calls}.values():
        for i, call in enumerate(c for c in layer._calls if id(c) in in_model):
            index[id(call)] = i
    return index


def _tensor_ref(t, node_index, outer: bool = False) -> list:
    # Keras numbers a nested functional model's nodes from 1 in input_layers / output_layers
    # (its node 0 links its own inputs to its outputs), from 0 in the inbound nodes.
    shift = 1 if outer and keras_class_name(t.call.layer) == "Functional" else 0
    return [t.call.layer.name, node_index[id(t.call)] + shift, t.index]


def _node(call, node_index) -> dict:
    def tensor(t):
        return {"class_name": "__keras_tensor__",
                "config": {"shape": list(t.shape), "dtype": t.dtype, "keras_history": _tensor_ref(t, node_index)}}

    args = [tensor(t) for t in call.inputs] if isinstance(call.inputs, (list, tuple)) else tensor(call.inputs)
    return {"args": [args], "kwargs": dict(call.kwargs)}


def _is_sequential(model) -> bool:
    from kcomp.models.sequential import Sequential

    return isinstance(model, Sequential)


def get_model_config(model) -> dict:
    """Keras's model.get_config(): a Sequential's layer list, or a functional model's layers and their nodes."""
    from kcomp.saving.keras_h5 import keras_layers

    if _is_sequential(model):
        layers = ([layer_to_keras(model.inputs[0].call.layer)] if model.built else []) + [layer_to_keras(l) for l in model.layers]
        config = {"name": model.name, "trainable": model.trainable, "dtype": _dtype_policy("float32"), "layers": layers}
        if model.built:
            config["build_input_shape"] = list(model.inputs[0].shape)
        return config
    model._require_built("the config")
    node_index = _calls_in_model(model)
    layers = []
    for layer in keras_layers(model):
        entry = layer_to_keras(layer)
        entry["name"] = layer.name
        calls = sorted((c for c in model_calls(model) if c.layer is layer), key=lambda c: node_index[id(c)])
        entry["inbound_nodes"] = [] if isinstance(layer, kl.InputLayer) else [_node(c, node_index) for c in calls]
        layers.append(entry)
    inputs = [_tensor_ref(t, node_index, outer=True) for t in model.inputs]
    outputs = [_tensor_ref(t, node_index, outer=True) for t in model.outputs]
    return {
        "name": model.name,
        "trainable": model.trainable,
        "layers": layers,
        # One tensor or a list, as the model was given them (Keras writes what Model(...) received).
        "input_layers": inputs[0] if len(inputs) == 1 and not isinstance(getattr(model, "_inputs_struct", None), (list, tuple)) else inputs,
        "output_layers": outputs[0] if model._single_output else outputs,
    }


def serialize_model(model, include_compile: bool = True) -> dict:
    """What Keras writes to config.json and to_json: the model, its build config and its compile config."""
    sequential = _is_sequential(model)
    out = _keras_object("keras" if sequential else "keras.src.models.functional",
                        "Sequential" if sequential else "Functional", get_model_config(model))
    if not sequential:
        out["registered_name"] = "Functional"  # as Keras writes it
        out["build_config"] = {"input_shape": None}
    elif model.built:
        out["build_config"] = {"input_shape": list(model.inputs[0].shape)}
    if include_compile and model.optimizer is not None:
        out["compile_config"] = compile_config(model)
    return out


def to_json(model, **kwargs) -> str:
    return json.dumps(serialize_model(model), **kwargs)


def _triples(value, where: str) -> tuple[list, bool]:
    """Keras's input_layers / output_layers: one [name, node, index] or a list of them; (list, single?)."""
    def triple(v):
        if not (isinstance(v, (list, tuple)) and len(v) == 3 and isinstance(v[0], str) and all(isinstance(i, int) for i in v[1:])):
            raise SerializationError(f"{where}: expected [layer name, node index, tensor index], received {v!r}.")
        return v

    if isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str):
        return [triple(value)], True
    if isinstance(value, (list, tuple)):
        return [triple(v) for v in value], False
    raise SerializationError(f"{where}: expected a list of [layer name, node index, tensor index], received {value!r}.")


def _sequential_from_config(config: dict):
    from kcomp.models.sequential import Sequential

    entries = config.get("layers")
    if not isinstance(entries, (list, tuple)):
        raise SerializationError("The Sequential config has no list of layers.")
    model = Sequential(name=config.get("name"))
    for entry in entries:
        model.add(layer_from_keras(entry))
    if not model.built and config.get("build_input_shape") is not None:
        model.build(tuple(config["build_input_shape"]))
    if config.get("trainable") is False:
        model.trainable = False
    return model


def _functional_from_config(config: dict):
    from kcomp.layers.base import flatten
    from kcomp.models.functional import Model

    entries = config.get("layers")
    if not isinstance(entries, (list, tuple)):
        raise SerializationError("The functional model's config has no list of layers.")
    layers, pending, produced, order = {}, {}, {}, []
    for entry in entries:
        layer = layer_from_keras(entry)
        name = entry.get("name", layer.name) if isinstance(entry, dict) else layer.name
        if name in layers:
            raise SerializationError(f"Two layers in the config are named {name!r}; Keras files name each layer once.")
        layers[name] = layer
        order.append(name)
        produced[name] = [layer.output] if isinstance(layer, kl.InputLayer) else []
        nodes = entry.get("inbound_nodes", []) or []
        pending[name] = [] if isinstance(layer, kl.InputLayer) else list(nodes)

    def tensor(ref, where, outer=False):
        if isinstance(ref, dict):
            if ref.get("class_name") != "__keras_tensor__":
                _refuse(ref, where, ("__keras_tensor__",))
            ref = (ref.get("config") or {}).get("keras_history")
        name, node, index = _triples(ref, where)[0][0]
        if outer and name in layers and keras_class_name(layers[name]) == "Functional":
            node -= 1  # see _tensor_ref
        if name not in layers:
            raise SerializationError(f"{where}: the input comes from layer {name!r}, which the config does not have.")
        if node >= len(produced[name]):
            return None  # not made yet
        outs = flatten(produced[name][node])
        if index >= len(outs):
            raise SerializationError(f"{where}: layer {name!r} has {len(outs)} outputs, the config reads output {index}.")
        return outs[index]

    def arguments(node, where):
        if isinstance(node, (list, tuple)):  # Keras 2: [[layer, node, index, kwargs], ...]
            tensors = [tensor(r[:3], where) for r in node]
            kwargs = node[0][3] if node and len(node[0]) > 3 else {}
            return (None if None in tensors else (tensors[0] if len(tensors) == 1 else tensors)), kwargs
        if not isinstance(node, dict) or not isinstance(node.get("args"), (list, tuple)) or len(node["args"]) != 1:
            raise SerializationError(f"{where}: expected a node {{'args': [inputs], 'kwargs': {{}}}}, received {str(node)[:80]!r}.")
        arg = node["args"][0]
        args = [tensor(r, where) for r in arg] if isinstance(arg, (list, tuple)) else tensor(arg, where)
        missing = None in args if isinstance(args, list) else args is None
        return (None if missing else args), node.get("kwargs") or {}

    progress = True
    while progress and any(pending.values()):
        progress = False
        for name in order:
            while pending[name]:
                where = f"layer {name!r}, node {len(produced[name])}"
                args, kwargs = arguments(pending[name][0], where)
                if args is None:
                    break
                extra = {k: v for k, v in kwargs.items() if k not in ("training", "mask") or (k == "mask" and v is not None)}
                if extra:
                    raise SerializationError(f"{where}: call arguments {sorted(extra)} are not supported by kcomp; the layer takes its inputs only.")
                # Keras records `training` with each call but overrides it whenever fit or predict
                # gives one, so it does not change what the model computes: kcomp leaves it out.
                produced[name].append(layers[name](args))
                pending[name].pop(0)
                progress = True
    if any(pending.values()):
        stuck = [n for n, p in pending.items() if p]
        raise SerializationError(f"The config's layers {stuck[:5]} read tensors no layer makes; the file is damaged.")
    input_refs, _ = _triples(config.get("input_layers"), "input_layers")
    output_refs, single = _triples(config.get("output_layers"), "output_layers")
    inputs = [tensor(r, "input_layers", outer=True) for r in input_refs]
    outputs = [tensor(r, "output_layers", outer=True) for r in output_refs]
    if None in inputs or None in outputs:
        raise SerializationError("The config's input_layers / output_layers name nodes that do not exist.")
    model = Model(inputs if len(inputs) > 1 else inputs[0], outputs[0] if single else outputs, name=config.get("name"))
    if config.get("trainable") is False:
        model.trainable = False
    return model


def model_from_config(config: dict, cls=None):
    """A kcomp model from Keras's model config (get_config's dict, or the full serialized object)."""
    if not isinstance(config, dict):
        raise SerializationError(f"Expected a model config (a dict), received {type(config).__name__}.")
    if "class_name" in config and "config" in config:
        kind = _resolve(config, "the model", MODELS)
        model = model_from_config(config["config"], cls=kind)
        if config.get("compile_config"):
            compile_from_config(model, config["compile_config"])
        return model
    from kcomp.models.sequential import Sequential

    sequential = cls == "Sequential" or (isinstance(cls, type) and issubclass(cls, Sequential)) or (
        cls != "Functional" and "input_layers" not in config)
    return _sequential_from_config(config) if sequential else _functional_from_config(config)


def model_from_json(json_string: str, compile: bool = True):
    """Keras's model_from_json: a model from to_json's text (compiled if the text has a compile config)."""
    try:
        obj = json.loads(json_string)
    except (TypeError, ValueError) as e:
        raise SerializationError(f"model_from_json takes the text model.to_json() returns; it is not JSON: {e}.") from None
    if not compile and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "compile_config"}
    return model_from_config(obj)


# -- compile configs ---------------------------------------------------------------------
_OPTIMIZER_BASE = {"weight_decay": None, "use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                   "loss_scale_factor": None, "gradient_accumulation_steps": None}


def optimizer_to_keras(opt) -> dict:
    config = opt.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        config["learning_rate"] = _keras_object("keras.optimizers.schedules", lr["class_name"], dict(lr["config"]))
    if isinstance(opt, optimizers.Adagrad):
        config["initial_accumulator_value"] = opt.initial_accumulator_value
    full = {"name": config.pop("name"), "learning_rate": config.pop("learning_rate"), **_OPTIMIZER_BASE}
    full.update(config)
    return _keras_object("keras.optimizers", type(opt).__name__, full)


def optimizer_from_keras(value):
    if isinstance(value, str):
        return optimizers.get(value)
    cls = _resolve(value, "the optimizer", OPTIMIZERS)
    where = f"the optimizer ({cls.__name__})"
    config = {k: _value(v, where) if k != "learning_rate" else v for k, v in (value.get("config") or {}).items()}
    lr = config.get("learning_rate")
    if isinstance(lr, dict):
        schedule = _resolve(lr, f"{where}, learning_rate", SCHEDULES)
        config["learning_rate"] = schedule(**_fit_kwargs(schedule, {k: _value(v, where) for k, v in (lr.get("config") or {}).items()}, where))
    if config.get("use_ema") is False:
        config.pop("ema_momentum", None)  # only read with use_ema
    try:
        return cls(**_fit_kwargs(cls, config, where))
    except KcompError as e:
        raise SerializationError(f"{where} in the file: {e}") from None


def _loss_to_keras(loss):
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, (list, tuple)):
        return [_loss_to_keras(l) for l in loss]
    if isinstance(loss, losses_module.Loss) and type(loss).__name__ in _classes_in(losses_module, losses_module.Loss):
        return _keras_object("keras.losses", type(loss).__name__, {**loss.get_config(), "dtype": None})
    raise SerializationError(
        f"The model's loss {getattr(loss, '__name__', loss)!r} is a function, which a Keras file cannot hold "
        "(loading never runs code from a file). Compile with a loss name such as 'mse' or a kcomp.losses class before saving."
    )


def _from_table(value, table: dict, what: str, fit: bool):
    """An instance of a kcomp loss or metric class named by a serialized Keras object."""
    cls = _resolve(value, what, table)
    config = {k: _value(v, what) for k, v in (value.get("config") or {}).items()}
    if config.get("dtype") in (None, "float32"):
        config.pop("dtype", None)
    try:
        return cls(**(_fit_kwargs(cls, config, f"{what} {cls.__name__}") if fit else config))
    except SerializationError:
        raise
    except (KcompError, TypeError) as e:
        raise SerializationError(f"{what} ({cls.__name__}) in the file: {e}") from None


def _loss_from_keras(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_loss_from_keras(v) for v in value]
    # A loss's own arguments (from_logits, ...) pass through its **kwargs; the class checks them.
    return _from_table(value, _classes_in(losses_module, losses_module.Loss), "the loss", fit=False)


def _metric_to_keras(metric):
    if metric is None or isinstance(metric, str):
        return metric
    if isinstance(metric, (list, tuple)):
        return [_metric_to_keras(m) for m in metric]
    if isinstance(metric, metrics_module.Metric) and type(metric).__name__ in _classes_in(metrics_module, metrics_module.Metric):
        return _keras_object("keras.metrics", type(metric).__name__, {"name": metric.name, "dtype": "float32"})
    raise SerializationError(f"The metric {metric!r} cannot be written to a Keras file; compile with metric names such as 'accuracy'.")


def _metric_from_keras(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_metric_from_keras(v) for v in value]
    return _from_table(value, _classes_in(metrics_module, metrics_module.Metric), "the metric", fit=True)


def compile_config(model) -> dict:
    settings = model.compile_settings
    return {
        "optimizer": optimizer_to_keras(model.optimizer),
        "loss": _loss_to_keras(settings.get("loss")),
        "loss_weights": settings.get("loss_weights"),
        "metrics": _metric_to_keras(settings.get("metrics")),
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def compile_from_config(model, config: dict) -> None:
    """model.compile(...) with what Keras's compile_config says (the optimizer, loss, loss weights, metrics)."""
    if not isinstance(config, dict):
        raise SerializationError(f"compile_config must be a dict, received {config!r}.")
    for key in ("weighted_metrics",):
        if config.get(key) is not None:
            raise SerializationError(f"compile_config: {key}={config[key]!r} is not supported by kcomp; compile without it.")
    if isinstance(config.get("loss"), dict) and "class_name" not in config["loss"]:
        raise SerializationError("compile_config: losses given per output name (a dict) are not supported; give a list.")
    try:
        model.compile(
            optimizer=optimizer_from_keras(config.get("optimizer", "rmsprop")),
            loss=_loss_from_keras(config.get("loss")),
            loss_weights=config.get("loss_weights"),
            metrics=_metric_from_keras(config.get("metrics")),
        )
    except SerializationError:
        raise
    except (KcompError, ArgumentError) as e:
        raise SerializationError(f"compile_config in the file: {e}") from None
