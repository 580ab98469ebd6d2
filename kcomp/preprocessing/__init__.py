"""Data preprocessing helpers (Keras's keras.preprocessing)."""

from kcomp.preprocessing import sequence

__all__ = ["sequence"]
