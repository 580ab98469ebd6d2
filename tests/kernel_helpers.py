"""Helpers shared by the kernel tests."""

import numpy as np


def randomize(model, seed=0):
    """Non-trivial weights everywhere (biases and BN statistics are zeros/ones at init)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for w in layer.weights:
            value = rng.normal(size=w.shape) * 0.5
            if w.name == "moving_variance":
                value = np.abs(value) + 0.5
            weights.append(value.astype(w.numpy().dtype))
        layer.set_weights(weights)


def kernels_of(graph):
    return [n for n in graph.nodes if n.op == "kernel"]
