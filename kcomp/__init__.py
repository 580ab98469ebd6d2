"""kcomp: Keras-style models compiled to fused Triton GPU kernels.

A Keras program ports by changing its import prefix:
`from keras.layers import Dense` becomes `from kcomp.layers import Dense`.
"""

__version__ = "0.1.0"

from kcomp import config  # noqa: F401  (first: it sets Triton's environment defaults)
from kcomp import (
    activations, backend, callbacks, datasets, distribution, initializers, layers, losses, metrics, mixed_precision, models, ops,
    optimizers, preprocessing, regularizers, utils,
)
from kcomp.errors import KcompError
from kcomp.layers import Input
from kcomp.models import Model, Sequential

__all__ = [
    "Input", "KcompError", "Model", "Sequential", "__version__", "activations", "backend", "callbacks", "datasets", "distribution", "initializers",
    "layers", "losses", "metrics", "mixed_precision", "models", "ops", "optimizers", "preprocessing", "regularizers", "utils",
]
