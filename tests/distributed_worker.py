"""One process of a data-parallel test job (tests/test_distributed*.py): trains the digits MLP.

Run alone (a job of one: the reference numbers) or under torchrun / with torchrun's environment.
Writes <out>/rank<r>.npz: every weight after training, the History and the trained model's
predictions, so a test compares the processes with each other and with one process. Modes (argv[2]):
  fit        fit for --epochs epochs (with --load: from that `.keras` checkpoint, from --initial-epoch);
             with --save, process 0 saves a `.keras` checkpoint at the end
  die        rank 1 kills itself (SIGKILL) in its third batch; the others must stop with the error
  mismatch   rank 1 builds a wider model; every process must stop at start-up naming rank 1
  drift      rank 1 changes a weight after its first batch; with KCOMP_DIST_CHECK=1 every process stops
             at the end of the epoch, naming rank 1
--bn sync|local puts a BatchNormalization in the hidden layer; --events writes what the last
training step did, in order (DataParallelStep.events), to <out>/events<r>.json; --backend
triton-interpret trains on the generated kernels under Triton's interpreter (the fused step).
"""

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

if "triton-interpret" in sys.argv:  # before Triton is imported: its interpreter mode is read then
    os.environ["TRITON_INTERPRET"] = "1"

import kcomp  # noqa: E402
from kcomp import optimizers  # noqa: E402
from kcomp.callbacks import Callback  # noqa: E402
from kcomp.layers import Activation, BatchNormalization, Dense, Input  # noqa: E402
from kcomp.models import Sequential  # noqa: E402


def digits(n: int):
    (x, labels), _ = kcomp.datasets.digits.load_data(test_split=0, seed=0)
    return (x[:n].reshape(n, 64) / 16.0).astype("float32"), labels[:n].astype("int64")


def build(units: int, bn: str = "none", backend: str = "auto"):
    """The digits MLP; bn "sync" or "local": its hidden layer is Dense (no bias, as before a batch
    normalization) + BatchNormalization(synchronized=bn == "sync") + relu."""
    kcomp.utils.set_random_seed(1)
    # Rank 0's weights are broadcast anyway; a different seed per rank checks that they are.
    if os.environ.get("RANK", "0") != "0":
        kcomp.utils.set_random_seed(100 + int(os.environ["RANK"]))
    if bn == "none":
        hidden = [Dense(units, activation="relu")]
    else:
        hidden = [Dense(units, use_bias=False), BatchNormalization(synchronized=bn == "sync"), Activation("relu")]
    model = Sequential([Input(shape=(64,)), *hidden, Dense(10, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  backend=backend)
    return model


class KillInThirdBatch(Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2 and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)


class DriftAfterFirstBatch(Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and os.environ.get("RANK") == "1":
            self.model.weights[0].assign(self.model.weights[0].numpy() + 1.0)


def predictions(model, x, args) -> dict:
    """predict over the data, over two rows in batches of 2 (a process of three has none) and
    predict_on_batch of five rows; in a job, also how many rows this process's executor ran."""
    executor = model.executor()
    rows_run, run = [], executor.run
    executor.run = lambda xs, params: (rows_run.append(len(xs[0])), run(xs, params))[1]
    out = {"predict/all": model.predict(x, batch_size=args.batch_size, verbose=0),
           "predict/first_two": model.predict(x[:2], batch_size=2, verbose=0),
           "predict/on_batch": model.predict_on_batch(x[:5])}
    if args.parallel:
        out["rows_predicted_here"] = np.asarray(sum(rows_run))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("mode")
    parser.add_argument("--samples", type=int, default=203)  # 203 = 6 batches of 32 + a last one of 11
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--initial-epoch", type=int, default=0)
    parser.add_argument("--save", default=None)
    parser.add_argument("--load", default=None)
    parser.add_argument("--parallel", action="store_true", help="set a DataParallel distribution")
    parser.add_argument("--verbose", type=int, default=0)
    parser.add_argument("--validation-split", type=float, default=0.0)
    parser.add_argument("--csv", default=None, help="a CSVLogger's file (process 0 writes it)")
    parser.add_argument("--no-shuffle", action="store_true", help="the same order in every epoch of every job")
    parser.add_argument("--bn", choices=["none", "local", "sync"], default="none",
                        help="a BatchNormalization in the hidden layer, synchronized or per process")
    parser.add_argument("--bucket-mb", type=float, default=None, help="DataParallel's bucket_cap_mb")
    parser.add_argument("--backend", default="auto", help="compile's backend (triton-interpret: the fused step)")
    parser.add_argument("--events", action="store_true",
                        help="write events<rank>.json: what the last training step did, in order")
    args = parser.parse_args()
    units = 24 if args.mode == "mismatch" and os.environ.get("RANK") == "1" else 16
    if args.parallel:
        buckets = {} if args.bucket_mb is None else {"bucket_cap_mb": args.bucket_mb}
        kcomp.distribution.set_distribution(kcomp.distribution.DataParallel(**buckets))
    # A `.keras` archive from process 0 of another job: weights, optimizer slots and step count.
    model = kcomp.models.load_model(args.load) if args.load else build(units, args.bn, args.backend)
    x, y = digits(args.samples)
    callbacks = {"die": [KillInThirdBatch()], "drift": [DriftAfterFirstBatch()]}.get(args.mode, [])
    callbacks += [kcomp.callbacks.CSVLogger(args.csv)] if args.csv else []
    started = time.monotonic()
    try:
        history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, initial_epoch=args.initial_epoch,
                            validation_split=args.validation_split,
                            shuffle=not args.no_shuffle, verbose=args.verbose, callbacks=callbacks)
    except kcomp.KcompError as e:
        print(f"KCOMP_ERROR after {time.monotonic() - started:.1f}s: {e}", flush=True)
        sys.exit(3)
    if args.save:
        model.save(args.save)
    weights = {w.path: np.asarray(w.numpy()) for w in model.weights}
    logs = {f"history/{k}": np.asarray(v) for k, v in history.history.items()}
    rank = os.environ.get("RANK", "0")
    np.savez(os.path.join(args.out, f"rank{rank}.npz"), **weights, **logs, **predictions(model, x, args))
    if args.events:
        step = next(s for key, s in model._training.steps.items() if key[0] == "train")
        with open(os.path.join(args.out, f"events{rank}.json"), "w") as f:
            json.dump(step.runner.events, f)


if __name__ == "__main__":
    main()
