"""Shared by tests/test_mixed_precision.py (against Keras) and tests/test_mixed_precision_kernels.py
(no Keras needed): a small classification set and the mixed model, built with either library."""

import numpy as np


def data(n=32, features=7, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), rng.integers(0, classes, n)


def mlp(lib, policy, classes=5):
    """Dense, BatchNormalization, Dense under `policy`, then Keras's advice for mixed models: a
    float32 softmax."""
    inp = lib.Input((7,))
    h = lib.layers.Dense(13, activation="relu", dtype=policy)(inp)
    h = lib.layers.BatchNormalization(dtype=policy)(h)
    h = lib.layers.Dense(classes, dtype=policy)(h)
    return lib.Model(inp, lib.layers.Activation("softmax", dtype="float32")(h))
