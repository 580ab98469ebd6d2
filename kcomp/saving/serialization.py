"""Keras 3's model configs (config.json, get_config, to_json), read and written by kcomp.

Writing turns kcomp's layers into Keras's serialized form ({"module",
"class_name", "config", "registered_name"}), with a functional model's
connections in Keras's `inbound_nodes` format (keras/src/models/functional.py,
keras/src/ops/node.py): each call's arguments, a tensor written as
{"class_name": "__keras_tensor__", "config": {"shape", "dtype", "keras_history":
[layer name, node index, tensor index]}}. Reading resolves every object through
kcomp's allow-list (kcomp/saving/allow_list.py); compile configs are in
kcomp/saving/compile_config.py.
"""

import json

from kcomp import layers as kl
from kcomp.errors import KcompError
from kcomp.saving.allow_list import (
    LAYERS, MODELS, SerializationError, config_entry, dtype_policy, fit_kwargs, keras_object, refuse, resolve,
)
from kcomp.saving.compile_config import compile_config, compile_from_config
from kcomp.saving.keras_paths import is_model, keras_class_name, model_calls


# -- layers ---------------------------------------------------------------------------
# Config entries that hold a serialized layer: a wrapper's (TimeDistributed's layer, Bidirectional's
# layer and backward_layer).
_NESTED_LAYERS = ("layer", "backward_layer")


def layer_from_keras(entry) -> kl.Layer:
    """A kcomp layer from Keras's serialized layer ({"module": "keras.layers", "class_name": "Dense", ...})."""
    name = entry.get("config", {}).get("name") if isinstance(entry, dict) and isinstance(entry.get("config"), dict) else None
    where = f"layer {name!r}" if name else "a layer"
    if isinstance(entry, dict) and entry.get("class_name") in MODELS:  # a nested model: one layer of this one
        resolve(entry, where, MODELS)
        return model_from_config({k: v for k, v in entry.items() if k != "compile_config"})
    cls = resolve(entry, where, LAYERS)
    config = {
        # A wrapper's layer is a serialized layer too, read the same way (through the allow-list).
        k: layer_from_keras(v) if k in _NESTED_LAYERS and isinstance(v, dict) else config_entry(k, v, where)
        for k, v in (entry.get("config") or {}).items()
    }
    if cls is kl.InputLayer and "batch_shape" not in config and "batch_input_shape" in config:
        config["batch_shape"] = config.pop("batch_input_shape")  # Keras 2's name, which Keras 3 reads too
    try:
        return cls(**fit_kwargs(cls, config, f"{where} ({cls.__name__})"))
    except SerializationError:
        raise
    except KcompError as e:
        raise SerializationError(f"{where} ({cls.__name__}) in the file: {e}") from None


def _encode_entry(key: str, value):
    if isinstance(value, dict) and set(value) == {"class_name", "config"}:
        if key.endswith("initializer"):
            return keras_object("keras.initializers", value["class_name"], dict(value["config"]))
        if key.endswith("regularizer"):
            return keras_object("keras.regularizers", value["class_name"], dict(value["config"]))
    if isinstance(value, tuple):
        return list(value)
    return value


_NO_CONSTRAINTS = {"kernel_constraint": None, "bias_constraint": None}
_RNN_EXTRA = {**_NO_CONSTRAINTS, "recurrent_constraint": None, "zero_output_for_mask": False}
# Keras-only arguments Keras writes with every layer of a class, at the values kcomp computes with.
_KERAS_EXTRA = {
    "Dense": {**_NO_CONSTRAINTS, "quantization_config": None},
    "Conv1D": _NO_CONSTRAINTS,
    "Conv2D": _NO_CONSTRAINTS,
    "Conv2DTranspose": _NO_CONSTRAINTS,
    "DepthwiseConv2D": {"depthwise_constraint": None, "bias_constraint": None},
    "SeparableConv2D": {"depthwise_constraint": None, "pointwise_constraint": None, "bias_constraint": None},
    "Embedding": {"embeddings_constraint": None, "activity_regularizer": None, "quantization_config": None},
    "BatchNormalization": {"beta_constraint": None, "gamma_constraint": None, "renorm": False, "renorm_clipping": None,
                           "renorm_momentum": 0.99},
    "LayerNormalization": {"rms_scaling": False, "beta_constraint": None, "gamma_constraint": None},
    "LSTM": {**_RNN_EXTRA, "seed": None}, "GRU": {**_RNN_EXTRA, "seed": None}, "SimpleRNN": _RNN_EXTRA,
}

# Layers whose Keras get_config writes the dtype's name, not a DTypePolicy (Keras's spatial dropouts).
_DTYPE_BY_NAME = {"SpatialDropout1D", "SpatialDropout2D"}


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
    elif cls_name not in _DTYPE_BY_NAME:
        config["dtype"] = dtype_policy(layer.dtype_policy.name)
    if isinstance(layer, kl.Embedding):
        config.pop("input_length", None)  # Keras 3 has none
    if isinstance(layer, kl.Dense) and config.get("activity_regularizer") is None:
        config.pop("activity_regularizer", None)  # Keras's Dense writes it only when set
    for key, value in _KERAS_EXTRA.get(cls_name, {}).items():
        config.setdefault(key, value)
    if "data_format" in config and config["data_format"] is None:
        config["data_format"] = "channels_last"
    return keras_object("keras.layers", cls_name, config)


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
    from kcomp.saving.keras_paths import keras_layers

    if getattr(model, "_subclassed", False):
        raise SerializationError(
            f'Model "{model.name}" is a subclassed model ({type(model).__name__}): its call is Python code, which a '
            "config cannot hold and kcomp never loads from a file. Save its weights with "
            "model.save_weights('model.weights.h5') and rebuild it in code, or write it as a functional model."
        )

    if _is_sequential(model):
        layers = ([layer_to_keras(model.inputs[0].call.layer)] if model.built else []) + [layer_to_keras(l) for l in model.layers]
        config = {"name": model.name, "trainable": model.trainable, "dtype": dtype_policy(model.dtype_policy.name),
                  "layers": layers}
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
    out = keras_object("keras" if sequential else "keras.src.models.functional",
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


def _tensors_named(value) -> set:
    """The layer names of the Keras tensors (__keras_tensor__ entries) anywhere in `value`."""
    if isinstance(value, dict):
        history = (value.get("config") or {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
        if isinstance(history, (list, tuple)) and history and isinstance(history[0], str):
            return {history[0]}
        return set().union(*(_tensors_named(v) for v in value.values()))
    if isinstance(value, (list, tuple)):
        return set().union(*(_tensors_named(v) for v in value))
    return set()


def _mask_ops(entries, output_layers) -> set:
    """Names of the entries that only compute masks: Keras writes the ops its compute_mask ran
    (Embedding's not_equal, Masking's not_equal and any, ...) as entries of module keras.src.ops.*
    whose outputs feed only the `mask` arguments of other calls (or other such ops). kcomp computes
    the same masks from the tensors themselves, so those entries and mask arguments are left out."""
    ops = {e.get("name") for e in entries if isinstance(e, dict) and str(e.get("module", "")).startswith("keras.src.ops")}
    read_as_data = _tensors_named(output_layers)
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") not in ops:
            for node in entry.get("inbound_nodes") or []:
                if isinstance(node, dict):
                    read_as_data |= _tensors_named(node.get("args"))
                    read_as_data |= _tensors_named({k: v for k, v in (node.get("kwargs") or {}).items() if k != "mask"})
    return ops - read_as_data


def _functional_from_config(config: dict):
    from kcomp.layers.tensors import flatten
    from kcomp.models.functional import Model

    entries = config.get("layers")
    if not isinstance(entries, (list, tuple)):
        raise SerializationError("The functional model's config has no list of layers.")
    mask_ops = _mask_ops(entries, config.get("output_layers"))
    layers, pending, produced, order = {}, {}, {}, []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") in mask_ops:
            continue
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
                refuse(ref, where, ("__keras_tensor__",))
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
                extra = {k: v for k, v in kwargs.items()
                         if k != "training" and not (k == "mask" and _tensors_named(v) <= mask_ops)}
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
    input_refs, single_input = _triples(config.get("input_layers"), "input_layers")
    output_refs, single = _triples(config.get("output_layers"), "output_layers")
    inputs = [tensor(r, "input_layers", outer=True) for r in input_refs]
    outputs = [tensor(r, "output_layers", outer=True) for r in output_refs]
    if None in inputs or None in outputs:
        raise SerializationError("The config's input_layers / output_layers name nodes that do not exist.")
    model = Model(inputs[0] if single_input else inputs, outputs[0] if single else outputs, name=config.get("name"))
    if config.get("trainable") is False:
        model.trainable = False
    return model


def model_from_config(config: dict, cls=None):
    """A kcomp model from Keras's model config (get_config's dict, or the full serialized object)."""
    if not isinstance(config, dict):
        raise SerializationError(f"Expected a model config (a dict), received {type(config).__name__}.")
    if "class_name" in config and "config" in config:
        kind = resolve(config, "the model", MODELS)
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
    except (TypeError, ValueError, RecursionError) as e:
        raise SerializationError(f"model_from_json takes the text model.to_json() returns; it is not JSON: {e}.") from None
    if not compile and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "compile_config"}
    try:
        return model_from_config(obj)
    except RecursionError:
        raise SerializationError("The JSON nests its objects too deeply to be a model config.") from None
