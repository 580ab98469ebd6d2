"""The `kcomp` command's entry point (kcomp_launch.py): a build that compiles in several processes
starts its fork server before `import kcomp`, so that the server's imports overlap this process's."""

import subprocess
import sys

import pytest

import kcomp_launch


def test_it_preloads_what_the_build_preloads():
    from kcomp.compiler import COMPILED_EMITS, DEFAULT_EMITS
    from kcomp.runtime.aot.parallel import PRELOAD

    assert kcomp_launch.PRELOAD == PRELOAD
    assert kcomp_launch.COMPILED_EMITS == COMPILED_EMITS
    assert kcomp_launch.COMPILED_EMITS & set(DEFAULT_EMITS)  # a build without --emit compiles


@pytest.mark.parametrize("argv, environ, workers", [
    (["build", "m.k", "--jobs", "4"], {}, True),
    (["build", "m.k", "--jobs=4"], {}, True),
    (["build", "m.k", "-j4"], {}, True),
    (["build", "m.k", "-j", "1"], {}, False),
    (["build", "m.k"], {"KCOMP_BUILD_JOBS": "3"}, True),
    (["build", "m.k"], {"KCOMP_BUILD_JOBS": "1"}, False),
    (["build", "m.k", "--jobs", "1"], {"KCOMP_BUILD_JOBS": "8"}, False),  # the flag wins, as in kcomp.cli
    (["build", "m.k", "--emit", "ir,triton", "--jobs", "4"], {}, False),  # nothing compiled
    (["build", "m.k", "--emit=ir,sass", "--jobs", "4"], {}, True),
    (["build", "m.k", "--jobs", "many"], {}, False),  # kcomp.cli refuses it
    (["fit", "m.k", "--jobs", "4"], {}, False),
    ([], {}, False),
])
def test_which_commands_compile_in_workers(argv, environ, workers):
    assert kcomp_launch.compiles_in_workers(argv, environ) == workers


def test_a_parallel_build_starts_the_server_before_kcomp_is_imported(tmp_path):
    """main() on a build command: the server is running (and has PRELOAD) when kcomp.cli's main is
    first imported; stopped there, so nothing is built."""
    code = (
        "import sys, os, multiprocessing.forkserver as f, kcomp_launch\n"
        "class Stop(Exception): pass\n"
        "class Finder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kcomp':\n"
        "            s = f._forkserver; os.kill(s._forkserver_pid, 0)\n"
        "            print('server up before kcomp', s._preload_modules == list(kcomp_launch.PRELOAD)); raise Stop\n"
        "sys.meta_path.insert(0, Finder())\n"
        "sys.argv = ['kcomp', 'build', 'm.k', '--jobs', '2']\n"
        "try: kcomp_launch.main()\n"
        "except Stop: pass\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["server", "up", "before", "kcomp", "True"]


def test_a_server_that_cannot_start_does_not_stop_the_command(monkeypatch):
    import kcomp.cli

    def fail():
        raise RuntimeError("no processes left")

    monkeypatch.setattr(kcomp_launch, "start_fork_server", fail)
    monkeypatch.setattr(kcomp.cli, "main", lambda: 7)
    monkeypatch.setattr(sys, "argv", ["kcomp", "build", "m.k", "--jobs", "2"])
    assert kcomp_launch.main() == 7


def test_the_command_ends_without_teardown_but_after_its_exit_hooks(tmp_path):
    """run() (the `kcomp` command): the exit code of main() or of its SystemExit, every line of
    output flushed into a pipe, the atexit hooks run, and then no module teardown."""
    script = (
        "import atexit, sys, kcomp_launch\n"
        "atexit.register(lambda: print('exit hook ran', flush=True))\n"
        "class Teardown:\n"
        "    def __del__(self): print('teardown ran', flush=True)\n"
        "keep = Teardown()\n"
        "sys.argv = ['kcomp'] + sys.argv[1:]\n"
        "kcomp_launch.run()\n"
    )
    model = tmp_path / "m.k"
    model.write_text("model m {\n  input(3)\n  dense(4)\n}\n")

    def kcomp(*args):
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)

    summary = kcomp("summary", str(model))
    assert summary.returncode == 0, summary.stderr
    lines = summary.stdout.splitlines()
    assert "Total params: 16" in summary.stdout and lines[-1] == "exit hook ran" and "teardown ran" not in lines
    assert kcomp("--version").returncode == 0  # argparse's SystemExit(0)
    usage = kcomp("build")  # argparse's SystemExit(2): no model file
    assert usage.returncode == 2 and "usage: kcomp build" in usage.stderr
    bad = tmp_path / "bad.k"
    bad.write_text("model m {\n  input(3)\n  dense(4, activation=nope)\n}\n")
    refused = kcomp("summary", str(bad))  # a KcompError: main() returns 1
    assert refused.returncode == 1 and "activation='nope'" in refused.stderr and refused.stdout == "exit hook ran\n"
