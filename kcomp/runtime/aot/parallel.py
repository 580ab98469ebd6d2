"""Compiling many kernel nodes at once: one job per kernel, run in worker processes or in this one.

A cold `kcomp build` spends nearly all its time in `triton.compile` and ptxas (about 1 s a
kernel), one kernel after another; the kernels are independent, so several processes compile
them side by side: this one and `jobs - 1` workers. The workers are started with the "spawn"
method: a forked child inherits Triton's and torch's threads and locks in whatever state they
were in, which is not safe. With one job or jobs=1 everything compiles here, with no pool.

A job carries the kernel node (it pickles small) and what to compile it for; a worker sends
back the PTX, cubin and resources, or, where the compile raised, a `Failure` with the error's
text (an exception from Triton need not pickle). `compile_jobs` turns the first failure, in
kernel order, into a KcompError naming the kernel, whether one process compiled or several:
a parallel build reports the error a sequential one would.
"""

import json
import multiprocessing
import traceback
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
    """Each job's result, in the jobs' order; `workers` processes at most, this one among them (1:
    no pool). `on_done(n)` is called as n jobs are done. The first failure in job order raises."""
    workers = min(workers, len(jobs))
    results = _compile_here(jobs, on_done) if workers <= 1 else _compile_in_pool(jobs, workers, on_done)
    for job, result in zip(jobs, results):
        if isinstance(result, Failure):
            _raise_for(job, result)
    return results


def _compile_here(jobs: list[CompileJob], on_done: Callable[[int], None]) -> list:
    results = []
    for job in jobs:
        results.append(compile_job(job))
        if isinstance(results[-1], Failure):
            break  # compile_jobs raises it; nothing later can come first
        on_done(len(results))
    return results


_started = None  # in a worker: the shared flags, one a job, set once some process has taken it


def _share_flags(flags) -> None:
    global _started
    _started = flags


def _compile_unless_started(index: int, job: CompileJob):
    """In a worker: the job's result, or None where another process took it first."""
    if _started[index]:
        return None
    _started[index] = 1
    return compile_job(job)


def _compile_in_pool(jobs: list[CompileJob], workers: int, on_done: Callable[[int], None]) -> list:
    """`workers - 1` spawned workers take the jobs from the first, this process from the last.

    This process has kcomp, torch and Triton loaded; a worker first imports them (measured: 2.2 s
    of CPU each, 8-12 s of wall time on the loaded 2-core build machine). So this process never
    waits for a worker: it compiles every job no worker has finished when it gets there (a job a
    worker is still compiling may be compiled twice, to the same bytes), and leaving the pool ends
    the workers. A parallel build is so never much slower than this process alone, and a worker
    that dies cannot hang it. Workers skip the jobs this process has taken (shared flags). A script
    that builds must start its work under `if __name__ == "__main__":`, as multiprocessing asks:
    each worker imports it again."""
    context = multiprocessing.get_context("spawn")
    flags = context.Array("b", len(jobs), lock=False)
    results: dict[int, dict | Failure] = {}
    with context.Pool(workers - 1, initializer=_share_flags, initargs=(flags,)) as pool:  # leaving terminates
        handles = [pool.apply_async(_compile_unless_started, (i, job)) for i, job in enumerate(jobs)]

        def worker_result(i):
            return handles[i].get() if handles[i].ready() and handles[i].successful() else None

        for i in reversed(range(len(jobs))):
            result = worker_result(i)
            if result is None:
                flags[i] = 1
                result = compile_job(jobs[i])
            results[i] = result
            on_done(len(results) + sum(1 for j in range(i) if handles[j].ready()))
    return [results[i] for i in range(len(jobs))]
