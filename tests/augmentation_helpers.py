"""Shared by the augmentation tests (test_augmentation.py, test_affine_transform_kernel.py,
test_augmentation_kernels.py): images, drawn parameters and transforms through the ops' references,
and a small model's fused training step after two steps checked against the reference. Needs no
Keras, so the kernel tests also run where Keras is not installed (the GPU machine's versions)."""

import math

import numpy as np
import torch

import kcomp
from kcomp.ir.registry import OPS
from kcomp.layers import Dense, Flatten, Input
from kcomp.models import Sequential

FILL_MODES = ("reflect", "wrap", "constant", "nearest")
INTERPOLATIONS = ("bilinear", "nearest")


def images(batch=3, height=7, width=9, channels=2, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(0, 255, (batch, height, width, channels)).astype("float32"))


def params(x, kind, factor=(), seed=5, step=None):
    inputs = (x,) if step is None else (x, torch.tensor(float(step)))
    return OPS["augment_params"].reference(*inputs, kind=kind, factor=tuple(factor), seed=seed)


def random_transforms(batch, height, width, seed=1):
    """Rotation, zoom and translation together: every coordinate off the pixel grid somewhere."""
    g = np.random.default_rng(seed)
    angle, scale = g.uniform(-math.pi, math.pi, batch), g.uniform(0.6, 1.5, batch)
    tx, ty = g.uniform(-3, 3, batch), g.uniform(-3, 3, batch)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    cx, cy = (width - 1) / 2, (height - 1) / 2
    t = np.stack([cos, -sin, cx - cx * cos + cy * sin + tx, sin, cos, cy - cx * sin - cy * cos + ty,
                  np.zeros(batch), np.zeros(batch)], axis=1)
    return torch.from_numpy(t.astype("float32"))


def affine(x, transform, **attrs):
    attrs = {"interpolation": "bilinear", "fill_mode": "constant", "fill_value": 0.0, "output_size": None, **attrs}
    return OPS["affine_transform"].reference(x, transform, **attrs)


def fused_step_after_training_two_steps(layers, seed):
    """Two Adam steps of Sequential([Input((6, 7, 2)), *layers(), Flatten(), Dense(3, softmax)]) on the
    kernels under the interpreter and on the reference (equal losses and weights), then its fused
    training step graph."""
    from kernel_helpers import assert_compiled_steps_match_the_reference
    from kcomp.compiler import train_step_graph
    from kcomp.passes import run_pipeline
    from kcomp.passes.pipeline import STEP_PIPELINE

    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(seed)
        return Sequential([Input(shape=(6, 7, 2)), *layers(), Flatten(), Dense(3, activation="softmax")])

    gen = np.random.default_rng(seed - 2)
    x = gen.uniform(size=(5, 6, 7, 2)).astype("float32")
    y = kcomp.utils.to_categorical(gen.integers(0, 3, 5), 3)
    assert_compiled_steps_match_the_reference(make, x, y)
    model = make()
    model.compile(optimizer="adam", loss="categorical_crossentropy", backend="reference")
    return run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)[0]
