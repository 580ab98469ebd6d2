"""Cold build benchmark (issue 17 part 9): `kcomp build --train` of the MLP 784-512-512-10's training
step to sm_90 with an empty KCOMP_CACHE_DIR, compiling its kernels one after another (--jobs 1)
and in parallel (--jobs CORES), against torch.compile's cold first step of the same model (Adam on
cross-entropy, batch 128, an empty Inductor cache) in the same run.

  python bench/bench_build.py [--repeats N] [--jobs N] [--no-torch-compile] [--before DIR] [--phases]
                              [--json PATH] [--quick]

Each build is the command a user runs, in a fresh process (its imports counted): the wait a user
sees, and its CPU seconds (its own and those of the processes it waited for: ptxas, cuobjdump; a
parallel build's workers are not counted, so CPU is shown for jobs=1 only). torch.compile's figure
is its first step alone (imports and model set-up not counted), on CUDA where there is a GPU,
else Inductor's CPU backend. The repeats are interleaved, so a machine's load falls on every
contender alike; the printout gives each time, the best, and the load average at the start.
--before DIR times another checkout's `kcomp build` (e.g. `git archive` of the commit before a
change, with its kcomp/kernels link) in the same rounds. --phases adds where a jobs=1 build's time
goes (bench/build_phases.py: imports, passes, each Triton stage, ptxas, cuobjdump), per checkout.
"""

import argparse
import json
import os
import resource
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
x, y = data("mlp", device)  # a batch of 128
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


def _env(root: Path = ROOT, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # AOT needs the compiler
    # A checkout imports from its folder only with its kcomp/kernels link (kernels/ ships inside the
    # package); without it, kcomp as installed (editable here, from .gpu-wheels/ on the GPU machine).
    if (root / "kcomp" / "kernels").exists():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return {**env, **extra}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kcomp_cold_build(model_file: Path, jobs: int, work: Path, root: Path = ROOT) -> dict:
    """Seconds (wall and CPU) of `kcomp build --train` into an empty cache, and the report's own timings."""
    cache, out = Path(tempfile.mkdtemp(dir=work)), Path(tempfile.mkdtemp(dir=work))
    # The `kcomp` command's entry point (kcomp_launch: a parallel build's fork server started before its
    # imports), `python -m kcomp` for a checkout from before it.
    entry = "kcomp_launch" if (root / "kcomp_launch.py").exists() else "kcomp"
    command = [sys.executable, "-m", entry, "build", str(model_file), "--train", "--target", "sm_90",
               "--emit", "ptx,cubin", "--jobs", str(jobs), "-o", str(out)]
    start, cpu = time.perf_counter(), _children_cpu()
    # Run from `work`: `python -m` puts the working folder first on sys.path, before PYTHONPATH's `root`.
    result = subprocess.run(command, capture_output=True, text=True, cwd=work, env=_env(root, KCOMP_CACHE_DIR=str(cache)))
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if result.returncode != 0:
        raise SystemExit(f"kcomp build failed:\n{result.stderr}")
    report = json.loads((out / "report.json").read_text())
    assert report["aot"]["cache_hits"] == 0, "the build was not cold"
    ptx_counted = "tensor cores (PTX)" in (out / "report.txt").read_text()
    return {"seconds": seconds, "cpu": cpu, "aot": report["seconds"]["aot"], "kernels": report["aot"]["compiled"],
            "tensor_cores_read_from": "ptx" if ptx_counted else "sass", "phases": report["seconds"]}


def import_seconds(root: Path = ROOT) -> float:
    """Wall seconds of a fresh `python -c "import kcomp.cli"`: the part of a build's wait spent starting
    Python and importing (torch, Triton, kcomp) before the build itself runs."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import kcomp.cli"], check=True, env=_env(root))
    return time.perf_counter() - start


def _where_the_time_went(run: dict, imports: float) -> str:
    """One build's wall time split: the phases its report times, the imports, and the rest (the
    interpreter's start and exit, a parallel build's pool ending, writing the report)."""
    phases = ", ".join(f"{name} {s:.2f}" for name, s in run["phases"].items())
    rest = run["seconds"] - sum(run["phases"].values()) - imports
    return f"    {phases}, imports {imports:.2f} (timed apart), the rest {rest:.2f} s"


def build_phases(model_file: Path, root: Path) -> dict:
    """bench/build_phases.py's breakdown of a jobs=1 build of `root`'s kcomp (a fresh process)."""
    command = [sys.executable, str(Path(__file__).with_name("build_phases.py")), str(model_file), "--train",
               "--kcomp-root", str(root)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=model_file.parent, env=_env(root))
    if result.returncode != 0:
        raise SystemExit(f"build_phases.py failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.splitlines()[-1])


def _print_phases(phases: dict[str, dict]) -> None:
    names = list(dict.fromkeys(name for run in phases.values() for name in run["phases"]))
    print(f"{'phase (13 kernels, one process)':52s}" + "".join(f"{label + ' wall / CPU s':>28s}" for label in phases))
    for name in names:
        cells = [run["phases"].get(name) for run in phases.values()]
        print(f"{name:52s}" + "".join(f"{c['wall']:>17.2f} / {c['cpu']:>6.2f}" if c else f"{'-':>28s}" for c in cells))


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
    parser.add_argument("--before", type=Path, help="another checkout whose kcomp build is timed alongside")
    parser.add_argument("--phases", action="store_true", help="also time each phase of a jobs=1 build")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--quick", action="store_true", help="one round, without torch.compile (kcomp bench --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.no_torch_compile = 1, True
    roots = {"": ROOT, **({"before, ": args.before.resolve()} if args.before else {})}
    times: dict[str, list] = {f"{label}jobs={jobs}": [] for label in roots for jobs in dict.fromkeys((1, args.jobs))}
    first_steps: list[float] = []
    phases: dict[str, dict] = {}
    load = os.getloadavg()
    print(f"load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f} on {os.cpu_count()} cores", flush=True)
    imports = {label: import_seconds(root) for label, root in roots.items()}
    print("python -c 'import kcomp.cli' in a fresh process: " + ", ".join(f"{label}{s:.2f} s" for label, s in imports.items()),
          flush=True)
    with tempfile.TemporaryDirectory(prefix="kcomp-bench-build-") as folder:
        work = Path(folder)
        model_file = work / "mlp.k"
        model_file.write_text(MLP)
        for repeat in range(args.repeats):
            for label, root in roots.items():
                for jobs in dict.fromkeys((1, args.jobs)):
                    run = kcomp_cold_build(model_file, jobs, work, root)
                    times[f"{label}jobs={jobs}"].append(run)
                    print(f"{label}kcomp build --train --jobs {jobs} (cold, {run['kernels']} kernels, tensor cores read from "
                          f"the {run['tensor_cores_read_from'].upper()}): {run['seconds']:.1f} s, {run['cpu']:.1f} s CPU "
                          f"(AOT {run['aot']:.1f} s)", flush=True)
                    print(_where_the_time_went(run, imports[label]), flush=True)
            if not args.no_torch_compile:
                first_steps.append(torch_compile_first_step(work))
                print(f"torch.compile cold first step: {first_steps[-1]:.1f} s", flush=True)
        if args.phases:
            for label, root in roots.items():
                phases[label.strip(", ") or "this checkout"] = build_phases(model_file, root)
            _print_phases(phases)
    best = {name: min(run["seconds"] for run in runs) for name, runs in times.items()}
    best_cpu = {name: min(run["cpu"] for run in runs) for name, runs in times.items()}
    for label in roots:
        sequential, parallel = best[f"{label}jobs=1"], best[f"{label}jobs={args.jobs}"]
        print(f"{label}best of {args.repeats}: jobs=1 {sequential:.1f} s ({best_cpu[f'{label}jobs=1']:.1f} s CPU), "
              f"jobs={args.jobs} {parallel:.1f} s -> parallel speed-up {sequential / parallel:.2f}x ({os.cpu_count()} cores here)")
        if first_steps:
            torch_best = min(first_steps)
            print(f"{label}torch.compile first step {torch_best:.1f} s -> speed-up of kcomp's cold build over it: "
                  f"{torch_best / parallel:.2f}x (jobs={args.jobs}), {torch_best / sequential:.2f}x (jobs=1); the goal is 10x")
    end = os.getloadavg()
    print(f"load average at the end {end[0]:.1f}, {end[1]:.1f}, {end[2]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"load_start": load, "load_end": end, "cores": os.cpu_count(), "builds": times,
                                         "import_seconds": imports,
                                         "torch_compile_first_step": first_steps, "phases": phases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
