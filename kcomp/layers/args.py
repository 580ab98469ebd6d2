"""Argument checks shared by the layers: each failure says "Received: name=value"."""

from kcomp.errors import ArgumentError


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArgumentError(f"Received: {name}={value!r}. Expected a positive integer.")
    return value


def int_tuple(name: str, value, n: int) -> tuple[int, ...]:
    """3 -> (3, 3); (2, 3) stays; every entry a positive integer."""
    given = value
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value) if isinstance(value, (list, tuple)) else value
    if not isinstance(value, tuple) or len(value) != n or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ArgumentError(f"Received: {name}={given!r}. Expected a positive integer or a tuple of {n} positive integers.")
    return value


def choice(name: str, value, options) -> str:
    if isinstance(value, str) and value.lower() in options:
        return value.lower()
    raise ArgumentError(f"Received: {name}={value!r}. Expected one of {list(options)}.")


def rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ArgumentError(f"Received: {name}={value!r}. Expected a number in [0, 1).")
    return float(value)


def channels_last(data_format) -> None:
    if data_format not in (None, "channels_last"):
        raise ArgumentError(
            f"Received: data_format={data_format!r}. kcomp works channels-last (NHWC); "
            "transpose the input to (batch, height, width, channels) and drop data_format."
        )


def no_constraint(name: str, value) -> None:
    if value is not None:
        raise ArgumentError(f"Received: {name}={value!r}. kcomp does not support weight constraints yet; pass None.")
