"""Process-wide session state a Keras user expects: unique layer names and the random seed.

Keras keeps these in `keras.backend` (clear_session) and `keras.utils` (set_random_seed);
kcomp.backend and kcomp.utils re-export them under those names. Inside kcomp, "backend"
means the executor a model runs on (compile(backend=...), kcomp.runtime.executor), so the
state lives here under a name of its own.
"""

import re

import torch

_name_counts: dict[str, int] = {}
_names_given: set[str] = set()  # names layers were given explicitly (or by a file they were loaded from)
_generator = torch.Generator().manual_seed(0)


def to_snake_case(name: str) -> str:
    """Keras's rule: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d, LSTM -> lstm."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def unique_name(base: str) -> str:
    """'dense', then 'dense_1', 'dense_2', ... as Keras names layers, skipping names already given
    explicitly: a base model loaded from a file has a "dense", and a new head's Dense must not take
    that name too (kcomp's weight names are layer paths, unique within a model, nested ones included)."""
    while True:
        count = _name_counts.get(base, 0)
        _name_counts[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        if name not in _names_given:
            return name


def name_given(name: str) -> None:
    """Note a name a layer was given, so that automatic names skip it."""
    _names_given.add(name)


def clear_session() -> None:
    """Reset layer-name counters (Keras's keras.backend.clear_session)."""
    _name_counts.clear()
    _names_given.clear()


def set_random_seed(seed: int) -> None:
    """Seed every initializer that was not given its own seed."""
    _generator.manual_seed(int(seed))


def generator(seed: int | None) -> torch.Generator:
    """A generator for one draw: its own when `seed` is given, else the global one."""
    if seed is None:
        return _generator
    return torch.Generator().manual_seed(int(seed))


def draw_seed() -> int:
    """A seed for an op that needs its own, drawn reproducibly from the global generator."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=_generator))
