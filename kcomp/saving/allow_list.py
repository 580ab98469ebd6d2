"""Reading Keras's serialized objects without running anything: kcomp's allow-list.

A serialized Keras object is {"module", "class_name", "config", "registered_name"}.
Nothing in one is imported or evaluated: it resolves only through the tables
below, by its class name, after its module is checked to be Keras's ("keras" or
"keras.*") and its registered_name to be absent or the class name. Anything else
(`os.system`, `builtins.eval`, a Lambda layer, a custom registered object) is
refused with a SerializationError naming it. Keras-only arguments are dropped
when they hold Keras's default (None, False, ...), and refused otherwise, so a
loaded model never quietly computes something else.
"""

import inspect

from kcomp import initializers, layers as kl, optimizers, regularizers
from kcomp.activations import ACTIVATIONS
from kcomp.errors import KcompError
from kcomp.ir import optim as optim_records
from kcomp.optimizers import schedules

KERAS_VERSION = "3.15.1"  # the Keras version kcomp's files are checked against (tests/test_keras_files.py)


class SerializationError(KcompError):
    """A model config kcomp will not build: an unknown or unsafe class, or settings it does not support."""


# -- the allow-list: class name -> kcomp class ----------------------------------------
LAYERS = {
    cls.__name__: cls
    for cls in (
        kl.Activation, kl.Add, kl.AveragePooling1D, kl.AveragePooling2D, kl.Average, kl.BatchNormalization,
        kl.Bidirectional, kl.Concatenate, kl.Conv1D, kl.Conv2D, kl.Conv2DTranspose, kl.DepthwiseConv2D, kl.SeparableConv2D, kl.Dense, kl.Dropout, kl.Embedding, kl.Flatten, kl.GRU,
        kl.GlobalAveragePooling1D, kl.GlobalAveragePooling2D, kl.GlobalMaxPooling1D, kl.GlobalMaxPooling2D,
        kl.InputLayer, kl.LSTM, kl.LayerNormalization, kl.LeakyReLU, kl.Masking, kl.MaxPooling1D, kl.MaxPooling2D,
        kl.Maximum, kl.Multiply, kl.Permute, kl.ReLU, kl.Reshape, kl.SimpleRNN, kl.Softmax, kl.SpatialDropout1D,
        kl.Subtract, kl.TimeDistributed,
        kl.CenterCrop, kl.Normalization, kl.Rescaling, kl.Resizing,
        kl.Cropping1D, kl.Cropping2D, kl.Dot, kl.ELU, kl.Minimum, kl.PReLU, kl.RepeatVector, kl.SpatialDropout2D,
        kl.UpSampling1D, kl.UpSampling2D, kl.ZeroPadding1D, kl.ZeroPadding2D,
        kl.RandomBrightness, kl.RandomContrast, kl.RandomCrop, kl.RandomFlip, kl.RandomRotation, kl.RandomTranslation,
        kl.RandomZoom,
    )
}
INITIALIZERS = dict(initializers._BY_CLASS)
REGULARIZERS = {"L1": regularizers.L1, "L2": regularizers.L2, "L1L2": regularizers.L1L2}
# Every optimizer kcomp has: each is a Keras face on one algorithm record (kcomp/ir/optim/).
OPTIMIZERS = {record.keras_class: getattr(optimizers, record.keras_class) for record in optim_records.RECORDS}
SCHEDULES = {cls.__name__: cls for cls in (schedules.ExponentialDecay, schedules.PiecewiseConstantDecay, schedules.CosineDecay)}
MODELS = ("Sequential", "Functional", "Model")


def classes_in(module, base) -> dict:
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


def refuse(obj, where: str, table: dict | tuple):
    known = ", ".join(sorted(table))
    raise SerializationError(
        f"{where}: the file names {_describe(obj) if isinstance(obj, dict) else repr(obj)}, which kcomp does not load. "
        f"kcomp builds only its own Keras objects ({known}); loading never runs code from a file. "
        "Rebuild that part with kcomp's layers, or remove it before saving."
    )


def resolve(obj, where: str, table: dict | tuple):
    """The table's entry for a serialized Keras object, after checking where it claims to come from."""
    if not isinstance(obj, dict) or not isinstance(obj.get("class_name"), str):
        raise SerializationError(f"{where}: expected a serialized Keras object (a dict with class_name), received {str(obj)[:80]!r}.")
    module, name, registered = obj.get("module"), obj["class_name"], obj.get("registered_name")
    if module is not None and not (isinstance(module, str) and (module == "keras" or module.startswith("keras."))):
        refuse(obj, where, table)
    if registered not in (None, name) or name not in table:
        refuse(obj, where, table)
    if not isinstance(obj.get("config", {}), (dict, type(None))):
        refuse(obj, where, table)
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


def fit_kwargs(cls, config: dict, where: str) -> dict:
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


def _numbers(value, where: str):
    """Nested lists of numbers (a tensor's or an array's values), checked to be nothing else."""
    if isinstance(value, list):
        return [_numbers(v, where) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise SerializationError(f"{where}: unexpected value {value!r} in a tensor's values.")


def plain_value(value, where: str):
    """A plain config value: tuples come back from Keras's {"class_name": "__tuple__"}, and the values
    of a tensor or array ("__tensor__", "__numpy__": AUC's label_weights) as a list; no other object is allowed."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and set(value) <= {"class_name", "config"}:
            return tuple(plain_value(v, where) for v in (value.get("config") or {}).get("value", []))
        if value.get("class_name") in ("__tensor__", "__numpy__") and set(value) <= {"class_name", "config"} \
                and isinstance(value.get("config"), dict) and "value" in value["config"]:
            return _numbers(value["config"]["value"], where)
        refuse(value, where, ("__tuple__", "__tensor__", "__numpy__"))
    if isinstance(value, list):
        return [plain_value(v, where) for v in value]
    if isinstance(value, tuple):  # get_config()'s dict before JSON
        return tuple(plain_value(v, where) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise SerializationError(f"{where}: unexpected value {value!r} in the config.")


def _dtype(value, where: str):
    if isinstance(value, dict):
        resolve(value, where, ("DTypePolicy", "FloatDTypePolicy"))
        return (value.get("config") or {}).get("name")
    return value


def _initializer(value, where: str):
    if not isinstance(value, dict):
        return value  # a name: initializers.get checks it
    cls = resolve(value, where, INITIALIZERS)
    return cls(**fit_kwargs(cls, {k: plain_value(v, where) for k, v in (value.get("config") or {}).items()}, where))


def _regularizer(value, where: str):
    if not isinstance(value, dict):
        return value
    cls = resolve(value, where, REGULARIZERS)
    return cls(**fit_kwargs(cls, {k: plain_value(v, where) for k, v in (value.get("config") or {}).items()}, where))


def _activation(value, where: str):
    if isinstance(value, dict):  # Keras writes its own activations by name; a dict is a custom function
        refuse(value, where, tuple(ACTIVATIONS))
    if value is not None and value not in ACTIVATIONS and value not in ("swish", "hard_swish"):
        raise SerializationError(f"{where}: activation {value!r} is not one of kcomp's activations {sorted(ACTIVATIONS)}.")
    return value


def config_entry(key: str, value, where: str):
    where = f"{where}, {key}"
    if key == "dtype":
        return _dtype(value, where)
    if key.endswith("initializer"):
        return _initializer(value, where)
    if key.endswith("regularizer"):
        return _regularizer(value, where)
    if key in ("activation", "recurrent_activation"):
        return _activation(value, where)
    return plain_value(value, where)


def keras_object(module: str, class_name: str, config: dict) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def dtype_policy(dtype: str) -> dict:
    return keras_object("keras", "DTypePolicy", {"name": dtype})
