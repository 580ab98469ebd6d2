"""Data-parallel training benchmark: kcomp's DataParallel against PyTorch DDP, on CPU processes (gloo).

  python bench/bench_distributed.py [--nprocs 1,2,4] [--steps 60] [--batch 256] [--bucket-mb 25,0.1]

For each process count N the script starts itself under torchrun twice: kcomp (fit with
DataParallel, the reference executor) and PyTorch DDP (the same MLP 64-256-256-10, Adam,
cross-entropy, each process's share of the same global batch). Both time the same number of
training steps after a warm-up epoch and print steps per second; scaling efficiency is
(steps/s with N) / (N x steps/s with the first count, 1 by default) at the same global batch
(strong scaling). Each process
runs one thread (OMP_NUM_THREADS=1), so N processes want N free cores: on a machine with fewer,
efficiency past the core count measures the cores, not the method.

--bucket-mb: the gradient bucket sizes to run, each with both (kcomp's DataParallel(bucket_cap_mb=)
and DDP's bucket_cap_mb). The MLP's gradients are 0.32 MiB: at 25 MB (both defaults) kcomp makes
one bucket, whose all-reduce can only start once the backward is done; at 0.1 MB two, the last two
layers' started while the backward computes the first layer's gradients. 1 process reduces nothing.
"over in bwd": the share of kcomp's bucket all-reduces already finished when the backward ended
(hidden behind its computing), over the warm-up and the timed steps.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 256


def data(n=2048):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def run_kcomp(steps, batch, bucket_mb) -> float:
    import kcomp
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    kcomp.distribution.set_distribution(kcomp.distribution.DataParallel(bucket_cap_mb=bucket_mb))
    model = Sequential([Input(shape=(64,)), Dense(WIDTH, activation="relu"), Dense(WIDTH, activation="relu"),
                        Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = (t.numpy() for t in data())
    model.fit(x[: batch * 4], y[: batch * 4], batch_size=batch, epochs=1, verbose=0)  # warm-up: steps built
    n = batch * steps
    x, y = np.resize(x, (n, 64)), np.resize(y, (n,))
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    rate = steps / (time.perf_counter() - start)
    runner = next(s for key, s in model._training.steps.items() if key[0] == "train").runner._run_backward
    # how many buckets the step makes, and the share of their all-reduces that were over before the backward was
    return rate, len(runner.buckets), runner.buckets_finished_in_backward / max(runner.buckets_run, 1)


def run_ddp(steps, batch, bucket_mb) -> float:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    nn = torch.nn
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(),
                                                  nn.Linear(WIDTH, 10)), bucket_cap_mb=bucket_mb)
    optimizer = torch.optim.Adam(model.parameters(), eps=1e-7)
    x, y = data()
    share = slice(rank * batch // world, (rank + 1) * batch // world)

    def step(i):
        rows = torch.arange(i * batch, (i + 1) * batch) % len(x)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[rows][share]), y[rows][share]).backward()
        optimizer.step()

    for i in range(4):
        step(i)
    dist.barrier()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    dist.barrier()
    rate = steps / (time.perf_counter() - start)
    dist.destroy_process_group()
    return rate, None, None


def launch(kind, nproc, steps, batch, bucket_mb) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                          __file__, "--worker", kind, "--steps", str(steps), "--batch", str(batch),
                          "--bucket-mb", str(bucket_mb)],
                         capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"{kind} with {nproc} processes failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nprocs", default="1,2,4")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=256, help="the global batch")
    parser.add_argument("--bucket-mb", default="25", help="gradient bucket sizes in MiB, comma-separated")
    parser.add_argument("--worker", choices=["kcomp", "ddp"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rate, buckets, hidden = (run_kcomp if args.worker == "kcomp" else run_ddp)(args.steps, args.batch,
                                                                                float(args.bucket_mb))
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps({"steps_per_s": rate, "buckets": buckets, "hidden": hidden}), flush=True)
        return
    nprocs = [int(n) for n in args.nprocs.split(",")]
    caps = [float(mb) for mb in args.bucket_mb.split(",")]
    print(f"MLP 64-{WIDTH}-{WIDTH}-10, Adam, global batch {args.batch}, {args.steps} timed steps, "
          f"CPU processes over gloo, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'procs':>5} {'bucket MB':>9} {'kcomp steps/s':>14} {'efficiency':>10} {'buckets':>7} {'over in bwd':>11} "
          f"{'DDP steps/s':>12} {'efficiency':>10} {'kcomp/DDP':>9}")
    base = {}
    for n in nprocs:
        for cap in caps if n > 1 else caps[:1]:
            runs = {kind: launch(kind, n, args.steps, args.batch, cap) for kind in ("kcomp", "ddp")}
            rates = {kind: run["steps_per_s"] for kind, run in runs.items()}
            base = base or rates
            eff = {kind: rates[kind] / (n * base[kind]) for kind in rates}
            hidden = f"{runs['kcomp']['hidden']:.0%}" if n > 1 else "-"
            print(f"{n:>5} {cap:>9g} {rates['kcomp']:>14.1f} {eff['kcomp']:>10.2f} {runs['kcomp']['buckets']:>7} "
                  f"{hidden:>11} {rates['ddp']:>12.1f} {eff['ddp']:>10.2f} {rates['kcomp'] / rates['ddp']:>9.2f}",
                  flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
