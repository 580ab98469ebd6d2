"""Which layer class each .k name means, and how a call's arguments become its arguments.

Names are Keras's class names in snake_case (Conv2D -> conv2d, MaxPooling2D ->
max_pooling2d), plus a few short aliases. Arguments are Keras's, positional or
keyword, plus short aliases (kernel= for kernel_size=).
"""

import inspect
from difflib import get_close_matches

from kcomp import initializers, layers, regularizers
from kcomp.session import to_snake_case
from kcomp.errors import ArgumentError
from kcomp.layers.base import _BASE_KWARGS, Layer

_CLASSES = [
    getattr(layers, name)
    for name in layers.__all__
    if isinstance(getattr(layers, name), type)
    and issubclass(getattr(layers, name), Layer)
    and getattr(layers, name) not in (Layer, layers.InputLayer)
]

LAYERS: dict[str, type] = {to_snake_case(cls.__name__): cls for cls in _CLASSES}
LAYERS.update(
    {
        "relu": layers.ReLU,
        "leaky_relu": layers.LeakyReLU,
        "max_pool1d": layers.MaxPooling1D,
        "max_pool2d": layers.MaxPooling2D,
        "avg_pool1d": layers.AveragePooling1D,
        "avg_pool2d": layers.AveragePooling2D,
        "average_pool1d": layers.AveragePooling1D,
        "average_pool2d": layers.AveragePooling2D,
        "global_avg_pool1d": layers.GlobalAveragePooling1D,
        "global_avg_pool2d": layers.GlobalAveragePooling2D,
        "global_max_pool1d": layers.GlobalMaxPooling1D,
        "global_max_pool2d": layers.GlobalMaxPooling2D,
        "batch_norm": layers.BatchNormalization,
        "layer_norm": layers.LayerNormalization,
        "concat": layers.Concatenate,
        "prelu": layers.PReLU,
    }
)
for _keras_only in ("re_lu", "leaky_re_lu", "p_re_lu"):
    LAYERS.pop(_keras_only, None)

# Short argument names the language accepts besides Keras's own.
ARG_ALIASES = {"kernel": "kernel_size", "pool": "pool_size", "dilation": "dilation_rate", "shape": "target_shape"}

INPUT_ARGS = ("shape", "batch_size", "dtype", "name", "batch_shape")


def parameters(cls) -> list[str]:
    """The keyword arguments `cls(...)` accepts, in signature order (its own, its bases', then Layer's)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
    hidden = ("alpha",) if cls is layers.LeakyReLU else ()  # Keras 2's name of negative_slope; ELU's alpha is its own
    return [n for n in names if n not in hidden] + [n for n in _BASE_KWARGS if n not in names]


def positional_parameters(cls) -> list[str]:
    """Arguments that may be given by position: the class's own leading ones, as in Keras."""
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    if owner is Layer:
        return []  # Layer's own arguments (name, ...) are keyword-only in the language
    sig = inspect.signature(cls.__init__)
    out = []
    for p in list(sig.parameters.values())[1:]:
        if p.kind != p.POSITIONAL_OR_KEYWORD:
            break
        out.append(p.name)
    return out


def suggest(name: str, options) -> str:
    near = get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" Did you mean {near[0]!r}?" if near else ""


def lookup_layer(name: str) -> type:
    if name in LAYERS:
        return LAYERS[name]
    raise ArgumentError(f"unknown layer {name!r}.{suggest(name, [*LAYERS, 'input'])}")


def convert_nested(arg: str, name: str, args: list, kwargs: dict):
    """A call as an argument value: initializers and regularizers, e.g. kernel_regularizer=l2(0.01)."""
    if arg.endswith("_initializer"):
        cls = type(initializers.get(name))
        try:
            return cls(*args, **kwargs)
        except TypeError as e:
            raise ArgumentError(f"initializer {name}(...): {e}") from None
    if arg.endswith("_regularizer"):
        factory = {"l1": regularizers.L1, "l2": regularizers.L2, "l1_l2": regularizers.L1L2, "l1l2": regularizers.L1L2}.get(name)
        if factory is None:
            raise ArgumentError(f"unknown regularizer {name!r}. Use l1(...), l2(...) or l1_l2(...).")
        try:
            return factory(*args, **kwargs)
        except TypeError as e:
            raise ArgumentError(f"regularizer {name}(...): {e}") from None
    raise ArgumentError(f"argument {arg!r} takes a plain value, not a call {name}(...)")
