"""Python twin of cifar_augment.k: a small CIFAR-10 CNN that augments its images in the model.

Run: .venv/bin/python examples/cifar_augment.py [--epochs 2] [--samples N] [--backend reference]
It trains on Keras's CIFAR-10 files when kcomp.datasets.cifar10 finds them (nothing is downloaded),
else, saying so, on a small generated stand-in of the same shapes; `--stand-in` picks it outright.
The model part is Keras's code with `keras` replaced by `kcomp` (tests/test_examples_augment.py
builds it with Keras too and compares).
"""

import argparse

import numpy as np

from kcomp.layers import (Conv2D, Dense, Dropout, GlobalAveragePooling2D, Input, MaxPooling2D, RandomContrast,
                          RandomFlip, RandomRotation, RandomZoom, Rescaling, SeparableConv2D)
from kcomp.models import Sequential

COMPILE = {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def build_model(**compile_options):
    """The model, compiled; `compile_options` are kcomp's extras (backend=..., precision=...)."""
    model = Sequential(
        [
            Input(shape=(32, 32, 3)),
            Rescaling(1.0 / 255),
            # Active in fit only: a fresh flip, rotation, zoom and contrast of every image every step.
            RandomFlip("horizontal"),
            RandomRotation(0.05),
            RandomZoom(0.1),
            RandomContrast(0.2, value_range=(0, 1)),
            Conv2D(32, kernel_size=3, padding="same", activation="relu"),
            MaxPooling2D(2),
            SeparableConv2D(64, kernel_size=3, padding="same", activation="relu"),
            MaxPooling2D(2),
            Conv2D(64, kernel_size=3, padding="same", activation="relu"),
            GlobalAveragePooling2D(),
            Dropout(0.3),
            Dense(10, activation="softmax"),
        ],
        name="cifar_augment",
    )
    model.compile(**COMPILE, **compile_options)
    return model


def stand_in(n_train=512, n_test=128, seed=0):
    """CIFAR-10's shapes and dtypes ((n, 32, 32, 3) uint8, (n, 1) uint8 labels) with a pattern to
    learn that survives flips, small rotations and zooms: each class has its own mean colour."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(10, 3))

    def draw(n):
        y = rng.integers(0, 10, size=(n, 1))
        x = colours[y[:, 0], None, None, :] + rng.normal(0, 30, size=(n, 32, 32, 3))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)

    return draw(n_train), draw(n_test)


def load_data(use_stand_in=False):
    from kcomp.datasets import cifar10
    from kcomp.errors import KcompError

    if use_stand_in:
        return stand_in()
    try:
        return cifar10.load_data()
    except KcompError as e:
        print(f"{str(e).split(':')[0]}; training on a generated stand-in instead.")
        return stand_in()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--backend", default="auto", help="auto, triton, triton-interpret or reference")
    parser.add_argument("--stand-in", action="store_true", help="use the generated stand-in, not CIFAR-10")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = load_data(args.stand_in)
    if args.samples is not None:
        x_train, y_train = x_train[: args.samples], y_train[: args.samples]
        x_test, y_test = x_test[: args.samples], y_test[: args.samples]
    model = build_model(backend=args.backend)
    model.fit(x_train.astype("float32"), y_train, batch_size=args.batch_size, epochs=args.epochs,
              steps_per_epoch=args.steps_per_epoch, validation_data=(x_test.astype("float32"), y_test), verbose=2)
    loss, accuracy = model.evaluate(x_test.astype("float32"), y_test, batch_size=args.batch_size, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {accuracy:.4f} ({len(x_test)} images)")
    return loss, accuracy


if __name__ == "__main__":
    main()
