"""Every user-facing error kcomp raises.

Each class is a KcompError so callers can catch one type; each message names the
bad value and says how to fix it ("Received: units=0. Expected a positive
integer."). Internal bugs stay ordinary Python exceptions.
"""


class KcompError(Exception):
    """Base of every error a user's mistake can cause."""


class ArgumentError(KcompError, ValueError):
    """A layer, op or function got an argument it cannot accept."""


class ShapeError(KcompError, ValueError):
    """Shapes that do not fit together (names the layer and both shapes)."""


class GraphError(KcompError):
    """An IR graph that breaks an invariant (raised by the verifier)."""


class NotBuiltError(KcompError):
    """A model or layer used before its input shape is known."""


def format_shape(shape) -> str:
    """Keras's way of writing a shape: unknown dimensions print as None."""
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) == 1:
        return f"({dims[0]},)"
    return "(" + ", ".join(str(d) for d in dims) + ")"
