"""The `kcomp` command's entry point. It lives outside the kcomp package so that it runs before
`import kcomp`, which imports torch and the rest (1.7 s on the 2-core build machine).

For a `kcomp build` that will compile its kernels in several processes, it first starts
multiprocessing's fork server, which imports the compiler (PRELOAD: 2.2 s of CPU there) while this
process imports kcomp and runs the passes; when the kernels are ready to compile, the pool's
workers are then forked from a server that is already loaded. Started by the build itself, the
server's imports came after this process's, and on an H200 machine's 16 cores the pool of a
16-job build came up after this process had compiled all 11 kernels of the MLP's training step
alone (bench/RESULTS.md, 2026-12-04).

What it reads of the command line is only what decides that (the verb, --jobs, --emit, and
KCOMP_BUILD_JOBS); kcomp.cli parses and checks everything. A server started for a build that
then compiles nothing (every kernel cached, or a usage error) has only imported; it ends when
this process does. `python -m kcomp` runs kcomp.cli directly: the build starts its server itself,
after its imports.
"""

import os
import sys

# What the fork server imports before it forks a worker: all a compile needs (torch, Triton's
# compiler and NVIDIA backend, kcomp's codegen, kernel cache and templates). kcomp.runtime.aot.parallel
# forks its workers from this server.
PRELOAD = ("kcomp.runtime.aot.compile", "kcomp.runtime.kernel_cache", "kcomp.kernels.registry",
           "kcomp.codegen.module", "triton.compiler", "triton.backends.nvidia.compiler")
# The emits for which a build compiles its kernels (kcomp.compiler imports it from here); without
# --emit a build writes ptx and cubin.
COMPILED_EMITS = {"ptx", "cubin", "sass"}


def _option(argv: list[str], *names: str) -> str | None:
    """The last value given to any of `names` ("--jobs 4", "--jobs=4", "-j 4", "-j4"), or None."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "=") and name.startswith("--"):
                value = arg[len(name) + 1:]
            elif len(name) == 2 and arg.startswith(name) and len(arg) > 2 and not arg.startswith("--"):
                value = arg[2:]
    return value


def compiles_in_workers(argv: list[str], environ=os.environ) -> bool:
    """Whether `kcomp argv...` is a build that compiles kernels with more than one job."""
    if not argv or argv[0] != "build":
        return False
    emit = _option(argv, "--emit")
    if emit is not None and not COMPILED_EMITS & {e.strip() for e in emit.split(",")}:
        return False
    jobs = _option(argv, "--jobs", "-j") or environ.get("KCOMP_BUILD_JOBS", "").strip()
    if not jobs:
        return len(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)) > 1
    return jobs.isdigit() and int(jobs) > 1


def start_fork_server() -> None:
    """Start the fork server now, for a build that compiles its kernels in workers later: the server
    imports PRELOAD (2.2 s of CPU on the 2-core build machine) beside this process's imports and
    passes, so that at compile time Pool() only forks. Cheap where nothing is compiled after all
    (every kernel cached): the server only imports, and it ends when this process does. Called
    again (kcomp build calls it too, as kcomp.runtime.aot.parallel.start_server), it does nothing."""
    import multiprocessing
    from multiprocessing import forkserver

    multiprocessing.get_context("forkserver").set_forkserver_preload(list(PRELOAD))
    forkserver.ensure_running()


def run() -> None:
    """The `kcomp` command: main(), then the process ends without Python's teardown of its modules
    (torch's and Triton's objects collected one by one): `kcomp build --train --emit ir,triton` of
    the 784-512-512-10 MLP took 2.40 s with it and 1.96 s without (medians of 6 alternated runs on
    the 2-core build machine). What an exit must still do is done first: the atexit hooks run (a
    parallel build's pool ended, temporary folders removed) and the output streams are flushed.
    Every file a command writes is complete before it returns (written atomically). An exception
    other than SystemExit ends the process as usual."""
    import atexit

    try:
        code = main()
    except SystemExit as e:  # argparse's --help, --version and usage errors; sys.exit's codes
        code = e.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # noqa: SLF001 -- what interpreter shutdown would run first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (kcomp ... | head): nothing more to show
            pass
    os._exit(code or 0)


def main() -> int:
    if compiles_in_workers(sys.argv[1:]):
        try:
            start_fork_server()
        except Exception:  # noqa: BLE001 -- never in the command's way: the build starts one itself, or compiles alone
            pass
    from kcomp.cli import main as kcomp_main

    return kcomp_main()


if __name__ == "__main__":
    run()
