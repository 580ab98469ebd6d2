"""Models: Sequential and the functional Model."""

from kcomp.models.functional import Model
from kcomp.models.sequential import Sequential

__all__ = ["Model", "Sequential"]
