"""Cold build benchmark (issue 17 part 9): `kcomp build --train` of the MLP 784-512-512-10's training
step to sm_90 with an empty KCOMP_CACHE_DIR, compiling its kernels one after another (--jobs 1)
and in parallel (--jobs CORES), against torch.compile's cold first step of the same model (Adam on
cross-entropy, batch 128, an empty Inductor cache) in the same run.

  python bench/bench_build.py [--repeats N] [--jobs N] [--no-torch-compile]

Each build is the command a user runs, in a fresh process (its imports counted): the wait a user
sees. torch.compile's figure is its first step alone (imports and model set-up not counted),
on CUDA where there is a GPU, else Inductor's CPU backend. The repeats are interleaved, so a
machine's load falls on every contender alike; the printout gives each time and the best.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MLP = """model mlp {
  input(784)
  dense(512, activation=relu)
  dense(512, activation=relu)
  dense(10, activation=softmax)

  compile {
    optimizer = adam
    loss = sparse_categorical_crossentropy
  }
}
"""

# torch.compile's cold first step, in a fresh process (so nothing of an earlier compile is in memory).
TORCH_FIRST_STEP = """
import sys, time, torch
sys.path.insert(0, sys.argv[1])
from bench_training import data, torch_model
device = "cuda" if torch.cuda.is_available() else "cpu"
model = torch_model("mlp").to(device)
x, y = data("mlp", 128, device)
opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)

@torch.compile
def step():
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss

start = time.perf_counter()
step().item()
print(time.perf_counter() - start)
"""


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # AOT needs the compiler
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def kcomp_cold_build(model_file: Path, jobs: int, work: Path) -> dict:
    """Seconds of `kcomp build --train` into an empty cache, and the report's own timings."""
    cache, out = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    command = [sys.executable, "-m", "kcomp", "build", str(model_file), "--train", "--target", "sm_90",
               "--emit", "ptx,cubin", "--jobs", str(jobs), "-o", str(out)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=_env(KCOMP_CACHE_DIR=str(cache)))
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"kcomp build failed:\n{result.stderr}")
    report = json.loads((out / "report.json").read_text())
    assert report["aot"]["cache_hits"] == 0, "the build was not cold"
    return {"seconds": seconds, "aot": report["seconds"]["aot"], "kernels": report["aot"]["compiled"]}


def torch_compile_first_step(work: Path) -> float:
    cache = tempfile.mkdtemp(dir=work)
    result = subprocess.run([sys.executable, "-c", TORCH_FIRST_STEP, str(ROOT / "bench")], capture_output=True,
                            text=True, env=_env(TORCHINDUCTOR_CACHE_DIR=cache, TRITON_CACHE_DIR=cache + "/triton"))
    if result.returncode != 0:
        raise SystemExit(f"torch.compile's step failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.split()[-1])


def main(argv=None) -> None:
    from kcomp import config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=config.build_jobs(), help="the parallel build's workers (default: cores)")
    parser.add_argument("--no-torch-compile", action="store_true")
    args = parser.parse_args(argv)
    times: dict[str, list] = {"jobs=1": [], f"jobs={args.jobs}": []}
    first_steps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="kcomp-bench-build-") as folder:
        work = Path(folder)
        model_file = work / "mlp.k"
        model_file.write_text(MLP)
        for repeat in range(args.repeats):
            for jobs in (1, args.jobs):
                run = kcomp_cold_build(model_file, jobs, work)
                times[f"jobs={jobs}"].append(run["seconds"])
                print(f"kcomp build --train --jobs {jobs} (cold, {run['kernels']} kernels): {run['seconds']:.1f} s "
                      f"(AOT {run['aot']:.1f} s)", flush=True)
            if not args.no_torch_compile:
                first_steps.append(torch_compile_first_step(work))
                print(f"torch.compile cold first step: {first_steps[-1]:.1f} s", flush=True)
    best = {name: min(values) for name, values in times.items()}
    sequential, parallel = best["jobs=1"], best[f"jobs={args.jobs}"]
    print(f"best of {args.repeats}: jobs=1 {sequential:.1f} s, jobs={args.jobs} {parallel:.1f} s "
          f"-> parallel speed-up {sequential / parallel:.2f}x ({os.cpu_count()} cores here)")
    if first_steps:
        torch_best = min(first_steps)
        print(f"torch.compile first step {torch_best:.1f} s -> speed-up of kcomp's cold build over it: "
              f"{torch_best / parallel:.2f}x (jobs={args.jobs}), {torch_best / sequential:.2f}x (jobs=1); the goal is 10x")


if __name__ == "__main__":
    main()
