"""Training-step benchmark: kcomp against a hand-written PyTorch eager loop, torch.compile of
that loop, and Keras 3 on its torch backend (when installed), on the same model and data.

  python bench/bench_training.py [--steps N] [--rounds R] [--backend reference|triton] [--no-compile]

Models: the launch-bound MLP 784-512-512-10 at batch 128 (issue 5's GPU target: at least 3x
eager and 1.5x torch.compile), and a small CNN on 28x28x1 at batch 128. Each contender
runs Adam on cross-entropy; the printout is steps per second and the ratio kcomp / contender.
With --rounds R every contender is built once and timed R times, the contenders taking turns
each round, and the best rate of each is printed: on a machine others load, a slow spell then
hits every contender alike rather than whichever ran during it.
"""

import argparse

import numpy as np
import torch

from kcomp.bench.rates import kcomp_fit_rate, steps_per_second, torch_loop_rate


def kcomp_model(kind):
    from kcomp.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from kcomp.models import Sequential

    if kind == "mlp":
        return Sequential([Input(shape=(784,)), Dense(512, activation="relu"), Dense(512, activation="relu"), Dense(10, activation="softmax")])
    return Sequential([Input(shape=(28, 28, 1)), Conv2D(32, 3, activation="relu"), MaxPooling2D(),
                       Conv2D(64, 3, activation="relu"), MaxPooling2D(), Flatten(), Dense(10, activation="softmax")])


def torch_model(kind):
    nn = torch.nn
    if kind == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 5 * 5, 10))


def data(kind, batch, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 784) if kind == "mlp" else (batch, 28, 28, 1), generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    return x.to(device), y.to(device)


def bench_kcomp(kind, x, y, steps, backend):
    """Steps per second of Keras's loop: fit over `steps` batches (the same batch repeated), after
    a warm-up fit that compiles the step (and on a GPU captures its CUDA graph). fit reads
    nothing back to the host until the epoch ends, like the torch loops below; train_on_batch
    would, since it returns the loss as a Python number. Returns the timing function."""
    model = kcomp_model(kind)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", backend=backend)
    return lambda: kcomp_fit_rate(model, x, y, steps)


def bench_torch(kind, x, y, steps, compiled):
    model = torch_model(kind).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    inputs = x if kind == "mlp" else x.permute(0, 3, 1, 2).contiguous()
    return lambda: torch_loop_rate(lambda: torch.nn.functional.cross_entropy(model(inputs), y), opt, steps, compiled, x.is_cuda)


def bench_keras(kind, x, y, steps):
    try:
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    layers = keras.layers
    if kind == "mlp":
        model = keras.Sequential([keras.Input((784,)), layers.Dense(512, activation="relu"), layers.Dense(512, activation="relu"), layers.Dense(10, activation="softmax")])
    else:
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                                  layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    xn, yn = x.cpu().numpy(), np.eye(10, dtype="float32")[y.cpu().numpy()]
    return lambda: steps_per_second(lambda: model.train_on_batch(xn, yn), steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="time each contender this many times, taking turns; print the best")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first compile takes minutes on a CPU)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = args.backend if args.backend != "auto" else ("triton" if device == "cuda" else "reference")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; kcomp backend {backend}; "
          f"batch 128; {args.steps} steps; best of {args.rounds} rounds")
    print(f"{'model':6} {'contender':16} {'steps/s':>9} {'kcomp/it':>9}")
    for kind in ("mlp", "cnn"):
        x, y = data(kind, 128, device)
        on_kcomp = (x.cpu(), y.cpu()) if backend == "reference" else (x, y)
        contenders = {"kcomp": bench_kcomp(kind, *on_kcomp, args.steps, backend),
                      "torch eager": bench_torch(kind, x, y, args.steps, compiled=False)}
        if not args.no_compile:
            contenders["torch.compile"] = bench_torch(kind, x, y, args.steps, compiled=True)
        contenders["keras (torch)"] = bench_keras(kind, x, y, args.steps)
        results = {name: None for name in contenders}
        for _ in range(args.rounds):
            for name, rate_of in contenders.items():
                if rate_of is not None:
                    results[name] = max(results[name] or 0.0, rate_of())
        for name, rate in results.items():
            ratio = "" if rate is None or name == "kcomp" else f"{results['kcomp'] / rate:9.2f}"
            shown = "not installed" if rate is None else f"{rate:9.1f}"
            print(f"{kind:6} {name:16} {shown:>9} {ratio}")


if __name__ == "__main__":
    main()
