"""The AOT build cache heals: a damaged entry is compiled again, never copied out, and builds do
not depend on where the cache is.

One small kernel (Input(16) -> Dense(8, relu), batch 32) is built in a child process without
TRITON_INTERPRET (this file's __main__ block, started by aot_helpers.run_file_as_aot_child):
once into an empty cache, then once per (entry, damage) case after damaging that entry of the
cache. Damages: truncated, emptied, garbage of the same size, a folder in its place (it can be
neither read nor replaced, as another user's entry), and permission denied on reading and on
writing the cache folder (simulated: the tests run as root, who may read anything).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRIES = ["ptx", "cubin", "json"]
DAMAGES = ["truncated", "emptied", "garbage", "folder", "permission denied"]
TINY = "model tiny {\n  input(16)\n  dense(8, activation=relu)\n}\n"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from aot_helpers import run_file_as_aot_child

    cases = [[entry, damage] for entry in ENTRIES for damage in DAMAGES]
    return run_file_as_aot_child(__file__, cases, tmp_path_factory.mktemp("cache"), timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_entry_is_compiled_again_not_copied(records, entry, damage):
    first = records[0]
    assert first["compiled"] == 1 and first["cubin_bytes"] > 1000 and first["ptx_bytes"] > 1000
    (rec,) = [r for r in records[1:] if (r["entry"], r["damage"]) == (entry, damage)]
    assert rec["error"] is None, rec["error"]
    assert (rec["compiled"], rec["cache_hits"]) == (1, 0)
    assert rec["same_ptx"] and rec["same_cubin"] and rec["same_registers"]  # as built from an empty cache
    if damage in ("folder", "permission denied"):  # cannot be replaced: built in memory, one warning
        assert rec["warnings"] == 1, rec["stderr"]
        assert "cannot write the cache" in rec["stderr"] and "KCOMP_CACHE_DIR" in rec["stderr"]
    else:  # replaced by a whole entry: the next build copies it
        assert rec["warnings"] == 0, rec["stderr"]
        assert (rec["next_compiled"], rec["next_cache_hits"]) == (0, 1)


def test_an_entry_is_stored_with_its_size_and_digest(records):
    assert records[0]["header"].startswith("kcomp-cache 1 size=")


def _build(tmp_path, name, cache, triton_cache):
    """`kcomp build` as a user runs it, with its own kcomp and Triton caches (as another machine)."""
    model = tmp_path / "tiny.k"
    model.write_text(TINY)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(KCOMP_CACHE_DIR=str(cache), TRITON_CACHE_DIR=str(triton_cache), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "kcomp", "build", str(model), "-o", str(tmp_path / name), "--batch", "32",
         "--emit", "ptx,cubin"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    kernels = tmp_path / name / "kernels"
    return (kernels / "kernel_0.sm_90.ptx").read_bytes(), (kernels / "kernel_0.sm_90.cubin").read_bytes()


@pytest.mark.slow
def test_builds_do_not_depend_on_the_cache_folder(tmp_path):
    """Two builds with different KCOMP_CACHE_DIR (and Triton caches, as on two machines) give the same
    bytes. Triton's line info names source files; they had held the kcomp cache folder's path."""
    ptx_a, cubin_a = _build(tmp_path, "a", tmp_path / "cache_a", tmp_path / "triton_a")
    ptx_b, cubin_b = _build(tmp_path, "b", tmp_path / "some" / "other" / "cache_b", tmp_path / "triton_b")
    assert ptx_a == ptx_b and cubin_a == cubin_b
    assert b"cache_a" not in ptx_a + cubin_a and str(ROOT).encode() not in ptx_a + cubin_a
    assert b'.file\t4 "kcomp_generated/matmul_' in ptx_a or b'"kcomp_generated/matmul_' in ptx_a


@pytest.mark.slow
def test_a_damaged_entry_of_tritons_own_cache_is_not_copied(tmp_path):
    """Triton's cache (TRITON_CACHE_DIR) is not verified; AOT builds no longer read it."""
    first = _build(tmp_path, "a", tmp_path / "cache_a", tmp_path / "triton")
    damaged = [*(tmp_path / "triton").rglob("*.cubin"), *(tmp_path / "triton").rglob("*.ptx")]
    assert damaged
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert _build(tmp_path, "b", tmp_path / "cache_b", tmp_path / "triton") == first


def test_a_cache_that_cannot_be_written_warns_once_and_builds(tmp_path):
    """KCOMP_CACHE_DIR naming a file: every kernel (two here) is compiled in memory, one warning line."""
    cache = tmp_path / "a_file"
    cache.write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(KCOMP_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "kcomp", "build", str(ROOT / "examples" / "mlp_digits.k"), "--model", "seed_mlp",
         "-o", str(tmp_path / "out"), "--batch", "32", "--emit", "cubin"], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("kcomp: warning")]
    assert len(warnings) == 1 and "cannot write the cache" in warnings[0], result.stderr
    assert len(list((tmp_path / "out" / "kernels").glob("*.cubin"))) == 2


def test_generated_kernels_load_from_memory_under_a_portable_file_name(tmp_path, monkeypatch):
    """Nothing is written to or read from the cache to import a kernel; its file name is the same
    everywhere (it had been the module's path in KCOMP_CACHE_DIR/kernels)."""
    import inspect

    import kcomp.dsl
    from kcomp.codegen.module import code_digest, kernel_source
    from kcomp.passes import run_pipeline
    from kcomp.runtime.kernel_cache import load_kernel

    monkeypatch.setenv("KCOMP_CACHE_DIR", str(tmp_path / "cache"))
    graph, _ = run_pipeline(kcomp.dsl.loads(TINY)["tiny"].to_graph())
    source = kernel_source(next(n for n in graph.nodes if n.op == "kernel"), 0)
    module = load_kernel(source)
    assert module.__file__ == f"kcomp_generated/{source.template}_{source.code_digest}.py"
    # What triton.jit and tracebacks read: the text of the first kernel of this code the process
    # loaded (another test's may come first), which differs from this one's in names only.
    assert code_digest(inspect.getsource(module)) == source.code_digest
    assert not (tmp_path / "cache").exists()


# --- the child (no TRITON_INTERPRET) ------------------------------------------------------------


def _damage(path: Path, damage: str, patches: list) -> None:
    import pathlib

    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "emptied":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(len(raw))))
    elif damage == "folder":
        path.unlink()
        (path / "x").mkdir(parents=True)
    elif damage == "permission denied":  # another user's 0600 entry in their 0755 folder
        real_read, real_access = pathlib.Path.read_bytes, os.access

        def read_bytes(self):
            if Path(self) == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_read(self)

        def access(p, mode, *args, **kwargs):
            if Path(p) == path.parent and mode & os.W_OK:
                return False
            return real_access(p, mode, *args, **kwargs)

        patches += [(pathlib.Path, "read_bytes", real_read), (os, "access", real_access)]
        pathlib.Path.read_bytes, os.access = read_bytes, access


def _build_in_process(model, options, out: Path) -> tuple[dict, dict, str]:
    import contextlib
    import io

    from kcomp import compiler

    built = compiler.build_graphs(model, options, None)
    compiler.kernel_entries(built, options, out)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        aot = compiler.compile_ahead_of_time(built, options, out)
    return aot, built.kernels[0], stderr.getvalue()


def child(cases: list, answer: Path) -> None:
    import shutil

    import kcomp.dsl
    from kcomp import compiler, config
    from kcomp.support import disk_cache

    model = kcomp.dsl.loads(TINY)["tiny"]
    options = compiler.BuildOptions(batch=32, emit=("ptx", "cubin"))
    work = Path(answer).parent
    aot, entry, _ = _build_in_process(model, options, work / "out_first")
    kernels = work / "out_first" / "kernels"
    ptx, cubin = (kernels / "kernel_0.sm_90.ptx").read_bytes(), (kernels / "kernel_0.sm_90.cubin").read_bytes()
    pristine = config.cache_dir()
    (folder,) = (pristine / "aot").iterdir()
    records = [{**aot, "ptx_bytes": len(ptx), "cubin_bytes": len(cubin),
                "header": (folder / "matmul.sm_90.cubin").read_bytes().split(b"\n")[0][:80].decode(errors="replace")}]
    for i, (kind, damage) in enumerate(cases):
        cache = work / f"cache_{i}"
        shutil.copytree(pristine, cache)
        os.environ["KCOMP_CACHE_DIR"] = str(cache)
        disk_cache._warned.clear()
        patches: list = []
        record = {"entry": kind, "damage": damage, "error": None}
        try:
            _damage(cache / "aot" / folder.name / f"matmul.sm_90.{kind}", damage, patches)  # the entry of kernel_0's code
            out = work / f"out_{i}"
            aot, again, stderr = _build_in_process(model, options, out)
            got = out / "kernels"
            record.update(
                compiled=aot["compiled"], cache_hits=aot["cache_hits"], stderr=stderr,
                warnings=stderr.count("warning"),
                same_ptx=(got / "kernel_0.sm_90.ptx").read_bytes() == ptx,
                same_cubin=(got / "kernel_0.sm_90.cubin").read_bytes() == cubin,
                same_registers=again["registers"] == entry["registers"] and again["spills"] == entry["spills"],
            )
            for owner, name, value in patches:
                setattr(owner, name, value)
            patches.clear()
            aot, _, _ = _build_in_process(model, options, work / f"out_{i}_next")
            record.update(next_compiled=aot["compiled"], next_cache_hits=aot["cache_hits"])
        except Exception as e:  # reported per case, so one failure does not hide the others
            record["error"] = f"{type(e).__name__}: {e}"[-3000:]
        finally:
            for owner, name, value in patches:
                setattr(owner, name, value)
        records.append(record)
    answer.write_text(json.dumps(records))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    child(json.loads(sys.argv[1]), Path(sys.argv[2]))


def test_the_aot_cache_key_names_the_triton_version(monkeypatch):
    """Two environments with different Tritons (CI runs 3.6 and 3.9) never share a compiled kernel."""
    import triton

    from kcomp.compiler import BuildOptions, _aot_cache_dir

    entry = {"_compile_key": "0123abcd", "template": "matmul"}
    folders = set()
    for version in ("3.6.0", "3.9.0"):
        monkeypatch.setattr(triton, "__version__", version)
        folders.add(_aot_cache_dir(entry, BuildOptions()))
    assert len(folders) == 2


SAME_CODE = ("model repeated {\n  input(32)\n  dense(32, activation=relu)\n  dense(32, activation=relu)\n"
             "  dense(32, activation=relu)\n  dense(4)\n}\n")


@pytest.mark.slow
def test_kernels_of_the_same_code_compile_once(tmp_path):
    """Three hidden Dense layers of one width are one code with the same launches: a cold build
    compiles it once, writes each kernel's files (the same bytes), and says which kernel each
    repeats; a warm build reads all four from the cache."""
    model = tmp_path / "repeated.k"
    model.write_text(SAME_CODE)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(KCOMP_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))

    def build(out):
        result = subprocess.run([sys.executable, "-m", "kcomp", "build", str(model), "-o", str(tmp_path / out), "--batch", "32",
                                 "--emit", "ptx,cubin", "--no-trial"], capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        return json.loads((tmp_path / out / "report.json").read_text()), result.stdout

    report, text = build("cold")
    assert report["aot"] == {"target": "sm_90", "compiled": 2, "cache_hits": 0, "same_code": 2}
    assert [k.get("same_code_as") for k in report["kernels"]] == [None, 0, 0, None]
    assert "dense_1 (matmul + bias_add + relu) (same code as kernel 0)" in text.replace("  ", " ")
    assert "2 the same code as a kernel compiled" in text
    kernels = tmp_path / "cold" / "kernels"
    for ext in ("ptx", "cubin"):
        first = (kernels / f"kernel_0.sm_90.{ext}").read_bytes()
        assert (kernels / f"kernel_1.sm_90.{ext}").read_bytes() == (kernels / f"kernel_2.sm_90.{ext}").read_bytes() == first
        assert (kernels / f"kernel_3.sm_90.{ext}").read_bytes() != first
    warm, _ = build("warm")
    assert warm["aot"] == {"target": "sm_90", "compiled": 0, "cache_hits": 4, "same_code": 0}
