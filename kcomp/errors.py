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


class NotCalledError(KcompError, AttributeError):
    """`layer.input` / `layer.output` of a layer never called on a tensor (an AttributeError, as in Keras)."""


def format_shape(shape) -> str:
    """Keras's way of writing a shape: unknown dimensions print as None."""
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) == 1:
        return f"({dims[0]},)"
    return "(" + ", ".join(str(d) for d in dims) + ")"


class SourceError(KcompError):
    """An error at a place in a .k file: prints file:line:column, the line, and a caret.

        model.k:4:13: syntax error: unexpected ')'
            dense(64, )
                      ^
        expected a value: a number, a name, a string, ( or [
    """

    def __init__(self, message: str, filename: str, line: int, column: int, source: str = "", hint: str = ""):
        self.message, self.filename, self.line, self.column, self.hint = message, filename, line, column, hint
        lines = source.splitlines()
        self.source_line = lines[line - 1] if 0 < line <= len(lines) else ""
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.filename}:{self.line}:{self.column}: {self.message}"
        if self.source_line:
            shown = self.source_line.expandtabs(4)
            caret_at = len(self.source_line[: self.column - 1].expandtabs(4))
            text += f"\n    {shown}\n    {' ' * caret_at}^"
        if self.hint:
            text += f"\n{self.hint}"
        return text
