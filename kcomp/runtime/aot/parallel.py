"""Compiling many kernel nodes at once: one job per kernel, run in worker processes or in this one.

A cold `kcomp build` spends nearly all its time in `triton.compile` and ptxas (about 1 s a
kernel), one kernel after another; the kernels are independent, so several processes compile
them side by side: this one and `jobs - 1` workers. The workers are started with the "spawn"
method: a forked child inherits Triton's and torch's threads and locks in whatever state they
were in, which is not safe. Each worker imports kcomp afresh (seconds), so with one job or
jobs=1 everything compiles here, with no pool.

A job carries the kernel node (it pickles small) and what to compile it for; a worker sends
back the PTX, cubin and resources, or, where the compile raised, a `Failure` with the error's
text (an exception from Triton need not pickle). `compile_jobs` turns the first failure, in
kernel order, into a KcompError naming the kernel, whether one process compiled or several:
a parallel build reports the error a sequential one would.
"""

import json
import multiprocessing
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable

from kcomp.errors import KcompError
from kcomp.ir.graph import Node


@dataclass(frozen=True)
class CompileJob:
    node: Node
    index: int  # the kernel's number in the build: its name is kernel_<index>
    name: str
    template: str
    target: str
    precision: str
    batch: int


@dataclass(frozen=True)
class Failure:
    """Why a job's compile raised, as text (sent back from a worker in place of the exception)."""

    error: str  # "RuntimeError: ..."
    ours: bool  # a KcompError (e.g. a process in interpreter mode): a message for the user, not a bug
    traceback: str  # where it was raised (shown with --debug)


def compile_job(job: CompileJob) -> dict | Failure:
    """The kernel's PTX (bytes), cubin and resources (as they read back from JSON), or a Failure."""
    from kcomp.runtime.aot.compile import compile_node

    try:
        result = compile_node(job.node, job.index, job.target, job.precision, job.batch)
        resources = json.dumps(result.resources(), indent=2, default=str) + "\n"
    except Exception as e:  # noqa: BLE001 -- any compile error becomes the KcompError compile_jobs raises
        return Failure(f"{type(e).__name__}: {e}", isinstance(e, KcompError), traceback.format_exc())
    return {"ptx": result.ptx.encode(), "cubin": result.cubin, "resources_json": resources.encode()}


def _raise_for(job: CompileJob, failure: Failure):
    why = f"{job.name} ({job.template}) did not compile for {job.target} at batch {job.batch}: {failure.error}"
    if not failure.ours:
        why += (" -- a kcomp bug: please report it with the kernel's .py file (kcomp build --emit triton "
                "writes it); --debug shows where it failed")
    error = KcompError(why)
    error.add_note(f"raised in the compile of {job.name}:\n{failure.traceback.rstrip()}")
    raise error


def compile_jobs(jobs: list[CompileJob], workers: int, on_done: Callable[[int], None] = lambda done: None) -> list[dict]:
    """Each job's result, in the jobs' order; `workers` processes at most (1: in this process).
    `on_done(n)` is called as the n-th job finishes. The first failure in job order raises."""
    workers = min(workers, len(jobs))
    if workers <= 1:
        results = []
        for job in jobs:
            result = compile_job(job)
            if isinstance(result, Failure):
                _raise_for(job, result)
            results.append(result)
            on_done(len(results))
        return results
    try:
        return _compile_in_pool(jobs, workers, on_done)
    except BrokenProcessPool as e:
        raise KcompError(
            f"a worker process compiling kernels stopped ({e}). A script that builds must start its work under "
            "`if __name__ == \"__main__\":` (each worker imports the script again, as Python's multiprocessing "
            "does), and a worker needs memory for torch and Triton; else build with jobs=1 (--jobs 1, KCOMP_BUILD_JOBS=1)."
        ) from None


def _compile_in_pool(jobs: list[CompileJob], workers: int, on_done: Callable[[int], None]) -> list[dict]:
    """`workers - 1` spawned workers and this process, taking the jobs in order. This process
    compiles too rather than wait: it has kcomp, torch and Triton loaded already, while each worker
    first imports them (measured: 2.2 s of CPU each, 8-12 s on the loaded 2-core build machine)."""
    results: dict[int, dict | Failure] = {}
    queue = list(range(len(jobs)))  # the jobs not started yet, in order
    pending = {}
    with ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            while queue or pending:
                while queue and len(pending) < workers - 1:  # one job a worker: the rest wait here
                    index = queue.pop(0)
                    pending[pool.submit(compile_job, jobs[index])] = index
                if queue:
                    index = queue.pop(0)
                    results[index] = compile_job(jobs[index])
                    on_done(len(results))
                    done = [future for future in pending if future.done()]
                else:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
                    on_done(len(results))
                first = _first_failure(results)
                if first is not None:
                    queue.clear()  # start nothing more; only an earlier job's failure could come first
                    if all(i in results for i in range(first)):
                        _raise_for(jobs[first], results[first])
        finally:
            for future in pending:  # after a failure or an interrupt
                future.cancel()
    return [results[i] for i in range(len(jobs))]


def _first_failure(results: dict) -> int | None:
    failed = [i for i, r in results.items() if isinstance(r, Failure)]
    return min(failed) if failed else None
