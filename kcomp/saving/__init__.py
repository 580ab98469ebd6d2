"""Saving and loading. Files are written atomically and never unpickled.

Weights go to a NumPy `.npz` (kcomp/saving/weights.py) or, for a name ending in
`.h5`, to Keras 3's `.weights.h5` layout (kcomp/saving/keras_h5.py); whole models
to Keras 3's `.keras` archive (kcomp/saving/archive.py), whose config is Keras's
(kcomp/saving/serialization.py, kcomp/saving/compile_config.py); reading resolves
every class from kcomp's own allow-list (kcomp/saving/allow_list.py).
"""

from kcomp.saving import keras_h5, weights as npz_weights
from kcomp.saving.archive import load_model, save_model
from kcomp.saving.serialization import get_model_config, model_from_config, model_from_json, serialize_model


def _is_h5(path) -> bool:
    return str(path).lower().endswith(".h5")


def save_weights(model, path) -> None:
    """`.weights.h5` (Keras 3's layout) or `.npz` (every weight by its kcomp path), by the file's suffix."""
    if _is_h5(path):
        keras_h5.save_weights_h5(model, path)
    else:
        npz_weights.save_weights(model, path)


def load_weights(model, path) -> None:
    if _is_h5(path):
        keras_h5.load_weights_h5(model, path)
    else:
        npz_weights.load_weights(model, path)


__all__ = [
    "get_model_config", "load_model", "load_weights", "model_from_config", "model_from_json", "save_model", "save_weights",
    "serialize_model",
]
