"""Cold builds compile their kernels in parallel worker processes (issue 17 part 9).

A three-kernel model (Input(16) -> Dense(12, relu) -> Dense(8, relu) -> Dense(4), batch 32) is
built twice in a child process started without TRITON_INTERPRET (this file's __main__ block, run
by aot_helpers.run_file_as_aot_child), each into an empty cache: one kernel after another
(jobs=1) and in two processes (jobs=2); and each kernel once more in a worker alone, forked from
the fork server as a build's workers are. The files written, the cache entries and the report
must be the same. The rest runs here: a failing kernel's error, a pool that never starts, the
progress line, the jobs setting.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kcomp.errors import ArgumentError, KcompError

ROOT = Path(__file__).resolve().parent.parent
THREE = "model three {\n  input(16)\n  dense(12, activation=relu)\n  dense(8, activation=relu)\n  dense(4)\n}\n"


def _digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def child(jobs_list: list, answer: Path) -> None:
    import kcomp.dsl
    from kcomp import compiler

    work = answer.parent
    records = []
    model = kcomp.dsl.loads(THREE)["three"]  # one model: a second would have other layer names (dense_3, ...)
    for jobs in jobs_list:
        os.environ["KCOMP_CACHE_DIR"] = str(work / f"cache_{jobs}")
        options = compiler.BuildOptions(batch=32, emit=("triton", "ptx", "cubin"), jobs=jobs)
        out = work / f"out_{jobs}"
        built = compiler.build_graphs(model, options, None)
        compiler.kernel_entries(built, options, out)
        aot = compiler.compile_ahead_of_time(built, options, out)
        again = compiler.compile_ahead_of_time(built, options, work / f"again_{jobs}")  # from the cache
        records.append({
            "jobs": jobs, "aot": aot, "again": again, "files": _digests(out), "cache": _digests(work / f"cache_{jobs}"),
            "kernels": [{k: v for k, v in e.items() if not k.startswith("_")} for e in built.kernels],
        })
    # The build's own process may compile every kernel before a worker is up (it never waits for
    # one), so each kernel is also compiled in a worker alone, to compare its bytes.
    from kcomp.runtime.aot.parallel import CompileJob, compile_job, worker_context

    jobs = [CompileJob(e["_node"], e["kernel"], e["name"], e["template"], "sm_90", "tf32", 32) for e in built.kernels]
    with worker_context().Pool(1) as pool:
        in_worker = pool.map(compile_job, jobs)
        (server,) = pool.map(_fork_server, [None])
    records.append({f"kernels/{job.name}.sm_90.{ext}": hashlib.sha256(result[ext]).hexdigest()
                    for job, result in zip(jobs, in_worker) for ext in ("ptx", "cubin")})
    records.append(server)
    answer.write_text(json.dumps(records))


def _fork_server(_) -> dict:
    """In a worker: what the process it was forked from (its parent) runs and has loaded."""
    parent = Path(f"/proc/{os.getppid()}")
    maps = (parent / "maps").read_text()
    return {"command": (parent / "cmdline").read_text().split("\0"), "threads": len(list((parent / "task").iterdir())),
            "libraries": sorted({name for name in ("libtorch_cpu", "libtriton") if name in maps})}


def test_a_parallel_build_writes_what_a_sequential_one_does(tmp_path):
    from aot_helpers import run_file_as_aot_child

    sequential, parallel, in_worker, server = run_file_as_aot_child(__file__, [1, 2], tmp_path, timeout=600)
    assert sequential["aot"] == parallel["aot"] == {"target": "sm_90", "compiled": 3, "cache_hits": 0, "same_code": 0}
    assert sequential["again"] == parallel["again"] == {"target": "sm_90", "compiled": 0, "cache_hits": 3, "same_code": 0}
    assert sorted(sequential["files"]) == [f"kernels/kernel_{i}.{ext}" for i in range(3) for ext in ("py", "sm_90.cubin", "sm_90.ptx")]
    assert parallel["files"] == sequential["files"]  # the same names and the same bytes
    assert in_worker == {k: v for k, v in sequential["files"].items() if not k.endswith(".py")}
    assert parallel["cache"] == sequential["cache"] and len(sequential["cache"]) == 9
    for entry in parallel["kernels"]:  # the report's rows; cache_hit was True on the second build
        entry["cache_hit"] = False
    assert parallel["kernels"] == [{**e, "cache_hit": False} for e in sequential["kernels"]]
    assert all(e["registers"] > 0 for e in sequential["kernels"])
    # The workers were forked from multiprocessing's fork server, which had loaded torch and Triton
    # (their native libraries are mapped) and ran one thread when it forked (a fork is safe).
    assert "from multiprocessing.forkserver import main" in " ".join(server["command"])
    assert server["libraries"] == ["libtorch_cpu", "libtriton"] and server["threads"] == 1


def _jobs(target: str) -> list:
    import kcomp.dsl
    from kcomp.passes import run_pipeline
    from kcomp.runtime.aot.parallel import CompileJob

    graph, _ = run_pipeline(kcomp.dsl.loads(THREE)["three"].to_graph())
    nodes = [n for n in graph.nodes if n.op == "kernel"]
    return [CompileJob(n, i, f"kernel_{i}", n.attrs["template"], target, "tf32", 32) for i, n in enumerate(nodes)]


def test_a_failing_kernel_is_reported_alike_by_workers_and_in_process():
    """Every kernel fails here (no such target); the error names the first in kernel order, whichever
    worker finished first, and reads as the one-process build's does."""
    from kcomp.runtime.aot.parallel import compile_jobs

    jobs = _jobs("sm_75")
    messages = []
    for workers in (1, 2):
        with pytest.raises(KcompError) as error:
            compile_jobs(jobs, workers)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("kernel_0 (matmul) did not compile for sm_75 at batch 32: KcompError: Received: target='sm_75'")


class _PoolThatNeverStarts:
    """A multiprocessing context whose Pool blocks until `release` is set (a fork server whose
    imports take forever); then a pool that records its terminate()."""

    def __init__(self):
        self.release, self.terminated = threading.Event(), threading.Event()

    def Array(self, *args, **kwargs):
        import multiprocessing

        return multiprocessing.get_context("spawn").Array(*args, **kwargs)

    def Pool(self, *args, **kwargs):
        assert self.release.wait(timeout=600)
        terminated = self.terminated

        class Pool:
            def apply_async(self, *args):
                raise AssertionError("no job goes to a pool started after the build is done")

            def terminate(self):
                terminated.set()

        return Pool()


def test_the_building_process_does_not_wait_for_the_pool_to_start(monkeypatch):
    """Every kernel is compiled here while the pool is still starting; the pool, once up, is ended."""
    from kcomp.runtime.aot import parallel

    context = _PoolThatNeverStarts()
    monkeypatch.setattr(parallel, "worker_context", lambda: context)
    monkeypatch.setattr(parallel, "compile_job", lambda job: {"compiled here": job.name})
    jobs = _jobs("sm_90")
    done = []
    results = parallel.compile_jobs(jobs, 3, done.append)
    assert results == [{"compiled here": f"kernel_{i}"} for i in range(3)] and done == [1, 2, 3]
    assert not context.terminated.is_set()
    context.release.set()
    assert context.terminated.wait(timeout=600)


# A build in its own process whose pool comes up only after every job was compiled in the process
# (`release_after` seconds later; never, for None), and which then exits. The pool prints when it is ended.
EXIT_SCRIPT = """
import sys, threading
sys.path.insert(0, {tests!r})
from kcomp.runtime.aot import parallel
from test_build_parallel import _jobs

class Context:
    release = threading.Event()
    def Array(self, *args, **kwargs):
        import multiprocessing
        return multiprocessing.get_context("spawn").Array(*args, **kwargs)
    def Pool(self, *args, **kwargs):
        self.release.wait()
        class Pool:
            def terminate(self):
                print("pool ended", flush=True)
        return Pool()

context = Context()
parallel.worker_context = lambda: context
parallel.compile_job = lambda job: {{"compiled here": job.name}}
parallel.EXIT_WAIT_S = {wait}
if {release_after} is not None:
    timer = threading.Timer({release_after}, context.release.set)
    timer.daemon = True  # the exit does not wait for it: only the hook can
    timer.start()
print(len(parallel.compile_jobs(_jobs("sm_90"), 3)), "compiled", flush=True)
"""


@pytest.mark.parametrize("release_after, wait, ended", [(0.5, 60.0, True), (None, 1.0, False)], ids=["comes-up-late", "never-starts"])
def test_a_pool_still_starting_when_the_process_exits_is_ended_or_left_after_a_bounded_wait(release_after, wait, ended):
    """A process that exits while its pool is still starting would unlink the semaphores the pool
    hands its workers (a worker forked then printed a traceback after a build that succeeded). At
    exit the pool is given EXIT_WAIT_S to come up and is ended; one that never starts is left after
    that wait (the subprocess's timeout guards against a hang)."""
    script = EXIT_SCRIPT.format(tests=str(Path(__file__).parent), wait=wait, release_after=release_after)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["3 compiled", *(["pool ended"] if ended else [])], result.stdout


def test_workers_a_pool_that_raised_left_running_are_ended(monkeypatch):
    """Pool() can raise after forking its workers (at interpreter shutdown Python 3.12 refuses it the
    threads it starts next); the workers it leaves running are ended, not left to outlive this process."""
    import multiprocessing
    import time

    from kcomp.runtime.aot import parallel

    started = []

    class Context:
        def Array(self, *args, **kwargs):
            return multiprocessing.get_context("spawn").Array(*args, **kwargs)

        def Pool(self, *args, **kwargs):
            worker = multiprocessing.get_context("forkserver").Process(target=time.sleep, args=(600,))
            worker.start()
            started.append(worker)
            raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(parallel, "worker_context", lambda: Context())
    monkeypatch.setattr(parallel, "compile_job", lambda job: {"compiled here": job.name})
    assert len(parallel.compile_jobs(_jobs("sm_90"), 3)) == 3
    for thread in list(parallel._STARTING):
        thread.join(120)
    (worker,) = started
    worker.join(60)
    assert worker.exitcode is not None and worker.exitcode < 0  # ended by a signal, not after its 600 s


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_line_is_drawn_on_a_terminal_only(monkeypatch):
    from kcomp.compiler import _progress_bar

    for stream, drawn in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        on_done = _progress_bar(3, "compiling kernels")
        for done in (1, 2, 3):
            on_done(done)
        text = stream.getvalue()
        assert ("compiling kernels 3/3" in text) is drawn and ("compiling kernels 0/3" in text) is drawn
        assert drawn or text == ""


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_jobs_setting_names_the_value(monkeypatch, value):
    from kcomp import compiler, config

    monkeypatch.setenv("KCOMP_BUILD_JOBS", value)
    with pytest.raises(KcompError, match=f"Received: KCOMP_BUILD_JOBS='{value}'"):
        config.build_jobs()
    with pytest.raises(KcompError, match="KCOMP_BUILD_JOBS"):
        compiler.BuildOptions().check()  # before the passes run
    compiler.BuildOptions(jobs=2).check()  # an explicit jobs wins over the environment


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True, "4"])
def test_bad_jobs_are_refused(jobs):
    from kcomp import compiler

    with pytest.raises(ArgumentError, match=f"Received: jobs={jobs!r}"):
        compiler.BuildOptions(jobs=jobs).check()


def test_the_jobs_setting(monkeypatch):
    from kcomp import config

    monkeypatch.setenv("KCOMP_BUILD_JOBS", " 3 ")
    assert config.build_jobs() == 3
    monkeypatch.delenv("KCOMP_BUILD_JOBS")
    assert config.build_jobs() == len(os.sched_getaffinity(0))


def _kcomp_build(tmp_path, *args):
    model = tmp_path / "three.k"
    model.write_text(THREE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "kcomp", "build", str(model), "-o", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_trial_run_is_small_and_optional(tmp_path):
    result = _kcomp_build(tmp_path, "--emit", "ir")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["trial_run"]["batch"] == 8 and report["trial_run"]["output_shapes"] == [[8, 4]]
    assert "trial run (reference (fused graph)) at batch 8: output shapes (8, 4)" in result.stdout
    result = _kcomp_build(tmp_path, "--emit", "ir", "--no-trial")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["trial_run"]["output_shapes"] == [] and "trial run" not in result.stdout
    assert result.stderr == ""  # no progress line in a pipe (and nothing compiled: no ptx asked)


def test_cli_refuses_bad_jobs(tmp_path):
    result = _kcomp_build(tmp_path, "--emit", "ir", "--jobs", "0")
    assert result.returncode == 2 and "Received: jobs=0" in result.stderr



@pytest.mark.parametrize("args, starts", [(("--emit", "ptx", "--jobs", "2"), True), (("--emit", "ptx", "--jobs", "1"), False),
                                          (("--emit", "ir", "--jobs", "2"), False)])
def test_a_parallel_build_starts_the_fork_server_before_its_passes(tmp_path, monkeypatch, args, starts):
    from kcomp import cli, compiler
    from kcomp.runtime.aot import parallel

    events = []

    class Stop(Exception):
        pass

    def record(event):
        def stop(*args):
            events.append(event)
            raise Stop
        return stop

    monkeypatch.setattr(parallel, "start_server", record("fork server"))
    monkeypatch.setattr(compiler, "build_graphs", record("passes"))
    model = tmp_path / "three.k"
    model.write_text(THREE)
    with pytest.raises(Stop):
        cli.main(["build", str(model), "-o", str(tmp_path / "out"), "--debug", *args])
    assert events == (["fork server"] if starts else ["passes"])


def test_the_fork_server_started_early_preloads_the_compiler():
    code = ("import multiprocessing.forkserver as f, os; from kcomp.runtime.aot.parallel import PRELOAD, start_server; "
            "start_server(); s = f._forkserver; os.kill(s._forkserver_pid, 0); "
            "print(s._preload_modules == list(PRELOAD))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["True"], result.stderr


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    child(json.loads(sys.argv[1]), Path(sys.argv[2]))
