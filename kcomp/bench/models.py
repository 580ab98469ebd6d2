"""The models suite's models. `layers(lib, shape)` is written once against Keras's API and called with
kcomp.layers or keras.layers (a port changes only the import prefix); `torch_module(weights)` is
the hand-written PyTorch model a user would write, loaded with those same weights (Keras layouts:
Dense kernel (in, units), Conv2D (kh, kw, in, filters), LSTM gates i, f, c, o), returning logits."""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

nn = torch.nn
VOCABULARY = 10000


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    layers: Callable  # (lib, input shape) -> list of layers (lib: kcomp.layers or keras.layers)
    torch_module: Callable  # (weights: list of arrays) -> nn.Module giving logits
    data: Callable  # (batch, quick) -> (x, y) numpy arrays
    batch: int
    optimizer: str  # Keras's name; the torch loop uses the same algorithm and defaults
    loss: str  # Keras's name; the torch loop applies it to logits
    output_activation: str  # what turns the torch model's logits into Keras's outputs


def _t(a) -> nn.Parameter:
    # A copy: training must not write into the shared initial weights every contender starts from.
    return nn.Parameter(torch.tensor(np.ascontiguousarray(a)))


def _linear(kernel, bias) -> nn.Linear:
    layer = nn.Linear(*kernel.shape)
    layer.weight, layer.bias = _t(kernel.T), _t(bias)
    return layer


def _conv(kernel, bias) -> nn.Conv2d:
    layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2])
    layer.weight, layer.bias = _t(kernel.transpose(3, 2, 0, 1)), _t(bias)
    return layer


def _mlp_torch(weights) -> nn.Module:
    pairs = list(zip(weights[::2], weights[1::2]))
    parts = []
    for kernel, bias in pairs[:-1]:
        parts += [_linear(kernel, bias), nn.ReLU()]
    return nn.Sequential(*parts, _linear(*pairs[-1]))


class _Permute(nn.Module):
    def __init__(self, *order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x.permute(*self.order)


def _cnn_torch(weights) -> nn.Module:
    # Keras's Flatten reads NHWC order, so the torch model goes back to NHWC before flattening.
    return nn.Sequential(_Permute(0, 3, 1, 2), _conv(*weights[0:2]), nn.ReLU(), nn.MaxPool2d(2),
                         _conv(*weights[2:4]), nn.ReLU(), nn.MaxPool2d(2), _Permute(0, 2, 3, 1), nn.Flatten(),
                         _linear(*weights[4:6]))


class _Sentiment(nn.Module):
    def __init__(self, weights):
        super().__init__()
        embedding, kernel, recurrent, bias, dense_kernel, dense_bias = weights
        self.embedding = nn.Embedding(*embedding.shape)
        self.embedding.weight = _t(embedding)
        self.lstm = nn.LSTM(kernel.shape[0], recurrent.shape[0], batch_first=True)
        # torch's gate order i, f, g, o is Keras's i, f, c, o; Keras has one bias where torch has two.
        self.lstm.weight_ih_l0, self.lstm.weight_hh_l0 = _t(kernel.T), _t(recurrent.T)
        self.lstm.bias_ih_l0, self.lstm.bias_hh_l0 = _t(bias), _t(np.zeros_like(bias))
        self.dense = _linear(dense_kernel, dense_bias)

    def forward(self, x):
        _, (h, _) = self.lstm(self.embedding(x))
        return self.dense(h[-1])


def _images(shape, classes):
    def data(batch, quick):
        rng = np.random.default_rng(0)
        return rng.standard_normal((batch, *shape), dtype=np.float32), rng.integers(0, classes, batch).astype("int32")
    return data


def _reviews(batch, quick):
    rng = np.random.default_rng(0)
    steps = 40 if quick else 500  # the seed pads reviews to 500 words
    return rng.integers(1, VOCABULARY, (batch, steps)).astype("int32"), rng.integers(0, 2, (batch, 1)).astype("float32")


MODELS = {spec.name: spec for spec in [
    ModelSpec("seed_mlp", "seed MLP 100-64-10",
              lambda L, shape: [L.Input(shape=shape), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")],
              _mlp_torch, _images((100,), 10), 32, "adam", "sparse_categorical_crossentropy", "softmax"),
    ModelSpec("mlp", "MLP 784-512-512-10",
              lambda L, shape: [L.Input(shape=shape), L.Dense(512, activation="relu"), L.Dense(512, activation="relu"),
                         L.Dense(10, activation="softmax")],
              _mlp_torch, _images((784,), 10), 128, "adam", "sparse_categorical_crossentropy", "softmax"),
    ModelSpec("cnn", "CNN 2x(conv3x3+pool) 28x28x1",
              lambda L, shape: [L.Input(shape=shape), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
                         L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dense(10, activation="softmax")],
              _cnn_torch, _images((28, 28, 1), 10), 128, "adam", "sparse_categorical_crossentropy", "softmax"),
    ModelSpec("sentiment_lstm", "seed sentiment Embedding-LSTM(32)",
              lambda L, shape: [L.Input(shape=shape, dtype="int32"), L.Embedding(VOCABULARY, 32), L.LSTM(32),
                         L.Dense(1, activation="sigmoid")],
              _Sentiment, _reviews, 32, "rmsprop", "binary_crossentropy", "sigmoid"),
]}
QUICK_BATCH = {"cnn": 16}  # --quick: the CNN at batch 128 takes seconds a step on two CPU cores


def torch_optimizer(name: str, parameters):
    """Keras's optimizer `name` with Keras's defaults, as torch spells it (Keras's epsilon is 1e-7)."""
    if name == "adam":
        return torch.optim.Adam(parameters, lr=1e-3, eps=1e-7)
    return torch.optim.RMSprop(parameters, lr=1e-3, alpha=0.9, eps=1e-7)


def torch_loss(name: str, logits, y):
    if name == "binary_crossentropy":
        return nn.functional.binary_cross_entropy_with_logits(logits, y)
    return nn.functional.cross_entropy(logits, y.long())


def torch_outputs(spec: ModelSpec, logits):
    return torch.softmax(logits, -1) if spec.output_activation == "softmax" else torch.sigmoid(logits)
