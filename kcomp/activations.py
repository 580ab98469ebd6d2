"""Keras's activation functions, each emitting its registry op.

`get('relu')` resolves the strings layers accept; `serialize(fn)` gives the
name back for get_config.
"""

from kcomp.errors import ArgumentError
from kcomp.ops import elu, emit, leaky_relu, sigmoid, silu, softplus, tanh  # the same functions as keras.ops's


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    return emit("relu", x, negative_slope=negative_slope, max_value=max_value, threshold=threshold)


def softmax(x, axis=-1):
    return emit("softmax", x, axis=axis)


def log_softmax(x, axis=-1):
    return emit("log_softmax", x, axis=axis)


def gelu(x, approximate=False):
    return emit("gelu", x, approximate=approximate)


def selu(x):
    return emit("selu", x)


def softsign(x):
    return emit("softsign", x)


swish = silu


def hard_sigmoid(x):
    return emit("hard_sigmoid", x)


def relu6(x):
    return relu(x, max_value=6.0)


def hard_silu(x):
    return emit("hard_silu", x)


hard_swish = hard_silu


def mish(x):
    return emit("mish", x)


def exponential(x):
    return emit("exponential", x)


def linear(x):
    """The identity. Layers skip it rather than emit a no-op node."""
    return x


ACTIVATIONS = {
    fn.__name__: fn
    for fn in (
        relu, sigmoid, tanh, softmax, log_softmax, gelu, elu, selu, softplus, softsign,
        leaky_relu, silu, hard_sigmoid, relu6, hard_silu, mish, exponential, linear,
    )
}
ALIASES = {"swish": silu, "hard_swish": hard_silu}


def get(identifier):
    """None -> linear; a name -> the function; a callable -> itself."""
    if identifier is None:
        return linear
    if callable(identifier):
        return identifier
    if isinstance(identifier, str):
        fn = ACTIVATIONS.get(identifier) or ALIASES.get(identifier)
        if fn is not None:
            return fn
        from difflib import get_close_matches

        near = get_close_matches(identifier, [*ACTIVATIONS, *ALIASES], n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ArgumentError(f"Received: activation={identifier!r}, which kcomp does not know.{hint}")
    raise ArgumentError(f"Received: activation={identifier!r}. Expected a name such as 'relu' or a function.")


def serialize(fn) -> str:
    for name, known in ACTIVATIONS.items():
        if fn is known:
            return name
    raise ArgumentError(
        f"activation {getattr(fn, '__name__', fn)!r} is a custom function; get_config can only name "
        "kcomp's activations. Pass it by name or rebuild the layer with the same function."
    )
