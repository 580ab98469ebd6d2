"""Compiling many kernel nodes at once: one job per kernel, run in worker processes or in this one.

A cold `kcomp build` spends nearly all its time in `triton.compile` and ptxas (about 1 s a
kernel), one kernel after another; the kernels are independent, so several processes compile
them side by side: this one and `jobs - 1` workers. With one job or jobs=1 everything compiles
here, with no pool.

The workers are forked from multiprocessing's fork server, which imports torch, Triton and kcomp's
compiler once (PRELOAD) before it forks any: a spawned worker imported them itself (2.2 s of CPU
each on the 2-core build machine), once per worker. This process is never forked (a fork inherits
Triton's and torch's threads and locks in whatever state they were in, which is not safe); the
fork server is a fresh interpreter that has only imported modules when it forks, and a test checks
that it runs one thread (the building process itself runs two after `import kcomp` and three after
the passes, measured, so forking it would not be safe). The server lives as long as this process,
and serves its later builds without importing again.

A job carries the kernel node (it pickles small) and what to compile it for; a worker sends
back the PTX, cubin and resources, or, where the compile raised, a `Failure` with the error's
text (an exception from Triton need not pickle). `compile_jobs` turns the first failure, in
kernel order, into a KcompError naming the kernel, whether one process compiled or several:
a parallel build reports the error a sequential one would.
"""

import atexit
import json
import multiprocessing
import multiprocessing.util  # before the exit hook below: atexit runs the hook first (last in, first out)
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from kcomp.errors import KcompError
from kcomp.ir.graph import Node
from kcomp_launch import PRELOAD, start_fork_server as start_server  # noqa: F401 (kcomp build calls start_server)


@dataclass(frozen=True)
class CompileJob:
    node: Node
    index: int  # the kernel's number in the build: its name is kernel_<index>
    name: str
    template: str
    target: str
    precision: str
    batch: int
    sass: bool = False  # also disassemble the cubin: the SASS, its tensor cores and spill stores


@dataclass(frozen=True)
class Failure:
    """Why a job's compile raised, as text (sent back from a worker in place of the exception)."""

    error: str  # "RuntimeError: ..."
    ours: bool  # a KcompError (e.g. a process in interpreter mode): a message for the user, not a bug
    traceback: str  # where it was raised (shown with --debug)


def compile_job(job: CompileJob) -> dict | Failure:
    """The kernel's PTX (bytes), cubin and resources (as they read back from JSON), and its SASS
    when the job asks for it; or a Failure."""
    from kcomp.runtime.aot.compile import compile_node

    try:
        result = compile_node(job.node, job.index, job.target, job.precision, job.batch)
        resources = json.dumps(result.resources(sass=job.sass), indent=2, default=str) + "\n"
    except Exception as e:  # noqa: BLE001 -- any compile error becomes the KcompError compile_jobs raises
        return Failure(f"{type(e).__name__}: {e}", isinstance(e, KcompError), traceback.format_exc())
    out = {"ptx": result.ptx.encode(), "cubin": result.cubin, "resources_json": resources.encode()}
    if job.sass:
        out["sass"] = result.sass().encode()
    return out


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


# What the fork server imports before it forks a worker (PRELOAD: all a compile needs), and
# start_server, which starts it ahead of the compile: both live in the `kcomp` command's entry point,
# kcomp_launch.py, which starts the server before `import kcomp` and so cannot import them from here.


def worker_context():
    """The multiprocessing context the workers start from: the fork server, preloading PRELOAD."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))  # read when the server starts, once per process
    return context


# Threads still starting a pool. A build that compiled every job here before its pool came up
# returns at once; if the process then exits while the thread is inside Pool(), the semaphores the
# pool hands its workers are unlinked, and a worker forked after that prints a traceback
# (FileNotFoundError in SemLock._rebuild) after a build that succeeded (seen on a loaded 2-core
# machine, 2 kernels with --jobs 2). At exit each is given up to EXIT_WAIT_S to come up and be
# ended; a pool that never starts delays the exit by that much, and never hangs it.
_STARTING: set[threading.Thread] = set()
EXIT_WAIT_S = 30.0


def _let_starting_pools_end() -> None:
    deadline = time.monotonic() + EXIT_WAIT_S
    for thread in list(_STARTING):
        thread.join(max(0.0, deadline - time.monotonic()))


atexit.register(_let_starting_pools_end)


def _end_processes_started_since(before: set) -> None:
    """End the workers a Pool() that raised left running. Python 3.12 refuses new threads at
    interpreter shutdown, and Pool() starts its threads after forking its workers: when the exit
    hook above let a pool come up, Pool() raised and its workers ran on, to print the semaphore
    traceback once this process had exited (Python 3.12.1, seed MLP with --jobs 2 on a loaded
    2-core machine: in the CI rehearsal, and 2 of 3 builds here)."""
    for process in set(multiprocessing.active_children()) - before:
        process.terminate()
        process.join(EXIT_WAIT_S)


class _Workers:
    """A pool started on a thread: a fork server's first fork waits for its imports, this process
    does not. `result(i)` is job i's result once a worker has finished it; `close()` ends the pool now
    (or, where it is still starting, as soon as it is up), without waiting for it."""

    def __init__(self, jobs: list[CompileJob], workers: int, flags):
        self._jobs, self._workers, self._flags = jobs, workers, flags
        self._handles: list = []
        self._pool = None
        self._closed = False
        self._lock = threading.Lock()
        thread = threading.Thread(target=self._start, name="kcomp-build-workers", daemon=True)
        _STARTING.add(thread)
        thread.start()

    def _start(self) -> None:
        try:
            self._start_pool()
        finally:
            _STARTING.discard(threading.current_thread())

    def _start_pool(self) -> None:
        before = set(multiprocessing.active_children())
        try:
            pool = worker_context().Pool(self._workers, initializer=_share_flags, initargs=(self._flags,))
        except Exception:  # noqa: BLE001 -- no workers (e.g. out of processes): this process compiles alone
            _end_processes_started_since(before)
            return
        with self._lock:
            if self._closed:
                pool.terminate()
                return
            self._pool = pool
            for i, job in enumerate(self._jobs):
                self._handles.append(pool.apply_async(_compile_unless_started, (i, job)))

    def result(self, i: int):
        """Job i's result where a worker has finished it, else None."""
        handle = self._handles[i] if i < len(self._handles) else None
        return handle.get() if handle is not None and handle.ready() and handle.successful() else None

    def finished(self, below: int) -> int:
        """How many of jobs 0..below-1 the workers have finished."""
        return sum(1 for handle in self._handles[:below] if handle.ready())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()


def _compile_in_pool(jobs: list[CompileJob], workers: int, on_done: Callable[[int], None]) -> list:
    """`workers - 1` workers take the jobs from the first, this process from the last.

    This process has kcomp, torch and Triton loaded; the fork server imports them before its first
    fork (2.2 s of CPU on the 2-core build machine, more wall time when it is loaded). So this
    process never waits for a worker, nor for the pool to start: it compiles every job no worker
    has finished when it gets there (a job a worker is still compiling may be compiled twice, to
    the same bytes), and then ends the workers. A parallel build is so never much slower than this
    process alone, and a worker that dies cannot hang it. (Only the process's exit may wait, up to
    EXIT_WAIT_S, for a pool still starting, to end it cleanly: _let_starting_pools_end.) Workers
    skip the jobs this process has taken (shared flags). A script that builds must start its work under
    `if __name__ == "__main__":`, as multiprocessing asks: each worker imports it again."""
    flags = worker_context().Array("b", len(jobs), lock=False)
    results: dict[int, dict | Failure] = {}
    pool = _Workers(jobs, workers - 1, flags)
    try:
        for i in reversed(range(len(jobs))):
            result = pool.result(i)
            if result is None:
                flags[i] = 1
                result = compile_job(jobs[i])
            results[i] = result
            on_done(len(results) + pool.finished(i))
    finally:
        pool.close()
    return [results[i] for i in range(len(jobs))]
