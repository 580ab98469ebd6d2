"""Recurrent training-step benchmark: the seed's sentiment model, kcomp against a hand-written
PyTorch eager loop (nn.Embedding + nn.LSTM: oneDNN on a CPU, cuDNN on a GPU), torch.compile of
that loop, and Keras 3 on its torch backend (and on JAX, when installed), in one run.

  python bench/bench_recurrent.py [--steps N] [--time T] [--backend reference|triton] [--no-compile] [--profile]

Models (batch 32, RMSprop, binary cross-entropy, as the seed compiles it):
  seed    Embedding(10000, 32) -> LSTM(32) -> Dense(1, sigmoid)
  wide    Embedding(10000, 32) -> LSTM(256) -> Dense(1, sigmoid)
  masked  the seed's model with Embedding(mask_zero=True) on pre-padded reviews of 10% to 100% of
          the time steps (pad_sequences' default); the PyTorch loop packs them
          (pack_padded_sequence: what a PyTorch user writes for padded batches)
Printed: steps per second and the ratio kcomp / contender (above 1: kcomp is faster).
"""

import argparse
import os
import sys

import numpy as np
import torch

from kcomp.bench.profiling import print_profile
from kcomp.bench.rates import kcomp_fit_rate, torch_loop_rate

VOCABULARY, EMBEDDING, BATCH = 10000, 32, 32
HIDDEN = {"seed": 32, "wide": 256, "masked": 32}


def data(time_steps, device, padded=False):
    """(ids, labels); padded: each row's first steps are padding (id 0), 10% to 100% of the steps real."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, VOCABULARY, (BATCH, time_steps), generator=g)
    if padded:
        lengths = torch.randint(max(1, time_steps // 10), time_steps + 1, (BATCH,), generator=g)
        x = torch.where(torch.arange(time_steps) >= (time_steps - lengths)[:, None], x, 0)
    y = torch.randint(0, 2, (BATCH,), generator=g).float()
    return x.to(device), y.to(device)


def bench_kcomp(kind, x, y, steps, backend, profile=False):
    """Steps per second of fit (kcomp.bench.rates.kcomp_fit_rate); with `profile`, then a second
    fit of the same model (its steps captured already) under torch.profiler."""
    from kcomp.layers import LSTM, Dense, Embedding, Input
    from kcomp.models import Sequential

    embedding = Embedding(VOCABULARY, EMBEDDING, mask_zero=kind == "masked")
    model = Sequential([Input(shape=(x.shape[1],), dtype="int32"), embedding,
                        LSTM(HIDDEN[kind]), Dense(1, activation="sigmoid")])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", backend=backend)
    rate = kcomp_fit_rate(model, x, y, steps, warmup=2)
    if profile:
        print_profile(f"{kind} kcomp, a 2-step warm-up and {steps} steps", lambda: kcomp_fit_rate(model, x, y, steps, warmup=2),
                      x.device.type)
    return rate


class TorchSentiment(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, EMBEDDING)
        self.lstm = torch.nn.LSTM(EMBEDDING, hidden, batch_first=True)
        self.dense = torch.nn.Linear(hidden, 1)

    def forward(self, x, lengths=None):
        """lengths: x holds each row's real steps first (post-padded), packed to skip the rest."""
        e = self.embedding(x)
        if lengths is not None:
            e = torch.nn.utils.rnn.pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(e)
        return self.dense(h[-1]).squeeze(-1)


def post_padded(x):
    """The same reviews with the padding after them, and their lengths (on the host, as packing wants)."""
    lengths = (x != 0).sum(1)
    order = torch.argsort((x == 0).int(), dim=1, stable=True)  # each row's real steps first, in order
    return x.gather(1, order), lengths.cpu()


def bench_torch(kind, x, y, steps, compiled):
    model = TorchSentiment(HIDDEN[kind]).to(x.device)
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)  # Keras's rmsprop defaults
    x, lengths = post_padded(x) if kind == "masked" else (x, None)
    return torch_loop_rate(lambda: torch.nn.functional.binary_cross_entropy_with_logits(model(x, lengths), y), opt,
                           steps, compiled, x.is_cuda)


def bench_keras(kind, x, y, steps, backend):
    """Keras 3 on `backend` in a child process (Keras picks its backend once per process)."""
    import subprocess

    code = (
        "import sys, time, numpy as np, keras\n"
        f"x = np.load(sys.argv[1]); y = np.load(sys.argv[2]); steps = {steps}\n"
        f"m = keras.Sequential([keras.Input((x.shape[1],), dtype='int32'), keras.layers.Embedding({VOCABULARY}, {EMBEDDING}, mask_zero={kind == 'masked'}),"
        f" keras.layers.LSTM({HIDDEN[kind]}), keras.layers.Dense(1, activation='sigmoid')])\n"
        "m.compile(optimizer='rmsprop', loss='binary_crossentropy')\n"
        "for _ in range(2): m.train_on_batch(x, y)\n"
        "t = time.perf_counter()\n"
        "for _ in range(steps): m.train_on_batch(x, y)\n"
        "print(steps / (time.perf_counter() - t))\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        xf, yf = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
        np.save(xf, x.cpu().numpy().astype("int32"))
        np.save(yf, y.cpu().numpy())
        env = {**os.environ, "KERAS_BACKEND": backend}
        done = subprocess.run([sys.executable, "-c", code, xf, yf], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None if "No module named" in last else f"failed: {last}"
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--time", type=int, default=500, help="time steps per sequence (the seed pads to 500)")
    parser.add_argument("--models", default="seed,wide")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first compile takes minutes on a CPU)")
    parser.add_argument("--profile", action="store_true", help="also print where kcomp's step spends its time (torch.profiler)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = args.backend if args.backend != "auto" else ("triton" if device == "cuda" else "reference")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; kcomp backend {backend}; "
          f"batch {BATCH}, time {args.time}; {args.steps} steps")
    print(f"{'model':6s} {'contender':18s} {'steps/s':>9s}  kcomp/it")
    for kind in args.models.split(","):
        x, y = data(args.time, device, padded=kind == "masked")
        results = {"kcomp": bench_kcomp(kind, x if backend != "reference" else x.cpu(), y if backend != "reference" else y.cpu(),
                                        args.steps, backend, args.profile)}
        results["torch eager"] = bench_torch(kind, x, y, args.steps, compiled=False)
        if not args.no_compile:
            results["torch.compile"] = bench_torch(kind, x, y, args.steps, compiled=True)
        results["keras (torch)"] = bench_keras(kind, x, y, args.steps, "torch")
        results["keras (jax)"] = bench_keras(kind, x, y, args.steps, "jax")
        for name, value in results.items():
            if value is None:
                print(f"{kind:6s} {name:18s} {'not installed':>9s}")
            elif isinstance(value, str):
                print(f"{kind:6s} {name:18s} {value}")
            else:
                ratio = "" if name == "kcomp" else f"{results['kcomp'] / value:9.2f}"
                print(f"{kind:6s} {name:18s} {value:9.1f} {ratio}")


if __name__ == "__main__":
    main()
