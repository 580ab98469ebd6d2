"""Training-step benchmark: kcomp against a hand-written PyTorch eager loop, torch.compile of
that loop, and Keras 3 on its torch backend (when installed), on the same model and data.

  python bench/bench_training.py [--steps N] [--rounds R] [--backend reference|triton] [--no-compile]
                                 [--models mlp,cnn,digits,lstm] [--threads T] [--profile]

Models (--models, default mlp,cnn): the launch-bound MLP 784-512-512-10 at batch 128 (issue 5's
GPU target: at least 3x eager and 1.5x torch.compile), a small CNN on 28x28x1 at batch 128 (both
Adam on sparse cross-entropy), the digits MLP of examples/mlp_digits.k (64-64-dropout(0.1)-10,
Adam on one-hot cross-entropy, batch 128) and the imdb LSTM of examples/imdb_lstm.k
(Embedding(10000, 32)-LSTM(32)-Dense(1, sigmoid), RMSprop on binary cross-entropy, batch 32,
500 steps; bench_recurrent.py's "seed"). The printout is steps per second and the ratio
kcomp / contender, with the load average (os.getloadavg) before and after each model.
With --rounds R every contender is built once and timed R times, the contenders taking turns
each round, and the best rate of each is printed: on a machine others load, a slow spell then
hits every contender alike rather than whichever ran during it.
"""

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

# The sibling script's models: bench/gpu_check.sh runs this with PYTHONSAFEPATH=1 (kcomp as installed,
# not from the tree), which leaves the script's own folder off sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_recurrent import TorchSentiment  # noqa: E402
from bench_recurrent import data as reviews  # noqa: E402

from kcomp.bench.profiling import print_profile
from kcomp.bench.rates import kcomp_fit_rate, steps_per_second, torch_loop_rate


MODELS = ("mlp", "cnn", "digits", "lstm")
BATCH = {"mlp": 128, "cnn": 128, "digits": 128, "lstm": 32}


def keras_layers(kind, L):
    """The model's layers, written once against Keras's API: L is kcomp.layers or keras.layers."""
    if kind == "mlp":
        return [L.Input(shape=(784,)), L.Dense(512, activation="relu"), L.Dense(512, activation="relu"), L.Dense(10, activation="softmax")]
    if kind == "digits":
        return [L.Input(shape=(64,)), L.Dense(64, activation="relu"), L.Dropout(0.1), L.Dense(10, activation="softmax")]
    if kind == "lstm":
        return [L.Input(shape=(500,), dtype="int32"), L.Embedding(10000, 32), L.LSTM(32), L.Dense(1, activation="sigmoid")]
    return [L.Input(shape=(28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(),
            L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dense(10, activation="softmax")]


def kcomp_model(kind):
    import kcomp.layers
    from kcomp.models import Sequential

    return Sequential(keras_layers(kind, kcomp.layers))


def torch_model(kind):
    nn = torch.nn
    if kind == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    if kind == "digits":
        return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    if kind == "lstm":
        return TorchSentiment(32)
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 5 * 5, 10))


def data(kind, device):
    """(x, y): y class ids, one-hot rows for the digits MLP (categorical cross-entropy), 0/1 for the LSTM."""
    if kind == "lstm":
        return reviews(500, device)
    g = torch.Generator().manual_seed(0)
    shape = {"mlp": (784,), "cnn": (28, 28, 1), "digits": (64,)}[kind]
    x = torch.randn((BATCH[kind], *shape), generator=g)
    y = torch.randint(0, 10, (BATCH[kind],), generator=g)
    if kind == "digits":
        y = torch.nn.functional.one_hot(y, 10).float()
    return x.to(device), y.to(device)


OPTIMIZER = {"lstm": "rmsprop"}  # else adam
LOSS = {"digits": "categorical_crossentropy", "lstm": "binary_crossentropy"}  # else sparse_categorical_crossentropy


def bench_kcomp(kind, x, y, steps, backend):
    """Steps per second of Keras's loop: fit over `steps` batches (the same batch repeated), after
    a warm-up fit that compiles the step (and on a GPU captures its CUDA graph). fit reads
    nothing back to the host until the epoch ends, like the torch loops below; train_on_batch
    would, since it returns the loss as a Python number. Returns the timing function."""
    model = kcomp_model(kind)
    model.compile(optimizer=OPTIMIZER.get(kind, "adam"), loss=LOSS.get(kind, "sparse_categorical_crossentropy"), backend=backend)
    return lambda: kcomp_fit_rate(model, x, y, steps)


def torch_loss_and_optimizer(kind, x, y):
    """The hand-written model's loss of the batch (a function) and its optimizer, with Keras's
    defaults (epsilon 1e-7; RMSprop's rho 0.9)."""
    model = torch_model(kind).to(x.device)
    if kind == "lstm":
        opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
        return lambda: torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y), opt
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    inputs = x.permute(0, 3, 1, 2).contiguous() if kind == "cnn" else x
    return lambda: torch.nn.functional.cross_entropy(model(inputs), y), opt


def bench_torch(kind, x, y, steps, compiled):
    loss, opt = torch_loss_and_optimizer(kind, x, y)
    return lambda: torch_loop_rate(loss, opt, steps, compiled, x.is_cuda)


def bench_keras(kind, x, y, steps):
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    model = keras.Sequential(keras_layers(kind, keras.layers))
    model.compile(optimizer=OPTIMIZER.get(kind, "adam"), loss=LOSS.get(kind, "categorical_crossentropy"))
    xn, yn = x.cpu().numpy(), y.cpu().numpy()
    if kind in ("mlp", "cnn"):
        yn = np.eye(10, dtype="float32")[yn]
    return lambda: steps_per_second(lambda: model.train_on_batch(xn, yn), steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="time each contender this many times, taking turns; print the best")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first compile takes minutes on a CPU)")
    parser.add_argument("--models", default="mlp,cnn", help=f"comma-separated, of {','.join(MODELS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for every contender (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="then run kcomp and the eager loop once more under torch.profiler "
                        "and print where the time went, kernel by kernel")
    args = parser.parse_args(argv)
    kinds = args.models.split(",")
    unknown = sorted(set(kinds) - set(MODELS))
    if unknown:
        parser.error(f"Received: --models={args.models}; unknown {unknown}, expected some of {','.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = args.backend if args.backend != "auto" else ("triton" if device == "cuda" else "reference")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; kcomp backend {backend}; "
          f"{args.steps} steps; best of {args.rounds} rounds")
    print(f"{'model':6} {'contender':16} {'steps/s':>9} {'kcomp/it':>9}")
    for kind in kinds:
        x, y = data(kind, device)
        load = os.getloadavg()[0]
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
        print(f"{kind:6} batch {BATCH[kind]}; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
        if args.profile:
            for name in ("kcomp", "torch eager"):
                print_profile(f"{kind} {name}, a 3-step warm-up and {args.steps} steps", contenders[name], device)


if __name__ == "__main__":
    main()
