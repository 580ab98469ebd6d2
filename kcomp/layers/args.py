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


def boolean(name: str, value) -> bool:
    """True or False only: a mistyped word in a .k file must not count as True."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ArgumentError(f"Received: {name}={value!r}. Expected True or False.")


def number(name: str, value, minimum=None, strictly=False, allow_none=False):
    """A real number (optionally above a bound); None only when allowed."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and minimum is not None:
        ok = value > minimum if strictly else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strictly else '>='} {minimum}"
        raise ArgumentError(f"Received: {name}={value!r}. Expected a number{bound}{' or None' if allow_none else ''}.")
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
