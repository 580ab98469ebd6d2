"""Models: Sequential and the functional Model; load_model and model_from_json read Keras 3's files."""

from kcomp.models.functional import Model
from kcomp.models.sequential import Sequential


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Keras's load_model: a model from a Keras 3 `.keras` archive (kcomp/saving/archive.py).

    Classes resolve only from kcomp's own allow-list, so there are no custom objects and
    no unsafe mode: a file naming anything else is refused.
    """
    from kcomp.errors import ArgumentError
    from kcomp.saving.archive import load_model as load

    if custom_objects:
        raise ArgumentError("kcomp builds models from its own classes only; custom_objects are not supported.")
    if safe_mode is not True:
        raise ArgumentError("Received: safe_mode=False. kcomp never runs code from a file; drop safe_mode.")
    return load(filepath, compile=compile)


def model_from_json(json_string, custom_objects=None):
    """Keras's model_from_json: a model from model.to_json()'s text."""
    from kcomp.errors import ArgumentError
    from kcomp.saving.serialization import model_from_json as from_json

    if custom_objects:
        raise ArgumentError("kcomp builds models from its own classes only; custom_objects are not supported.")
    return from_json(json_string)


__all__ = ["Model", "Sequential", "load_model", "model_from_json"]
