"""Saving and loading. Files are written atomically and never unpickled."""

from kcomp.saving.weights import load_weights, save_weights

__all__ = ["load_weights", "save_weights"]
