"""The kcomp command line, run as a user runs it (a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def kcomp(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kcomp", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, **(env or {})}, timeout=300,
    )


@pytest.mark.parametrize("verb", ["build", "summary", "check"])
def test_every_verb_has_help(verb):
    result = kcomp(verb, "--help")
    assert result.returncode == 0 and f"usage: kcomp {verb}" in result.stdout


def test_build_writes_ir_per_pass_and_report(tmp_path):
    result = kcomp("build", EXAMPLES / "mlp_digits.k", "--model", "seed_mlp", "--batch", 5, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "build" / "seed_mlp"
    from kcomp.passes import PIPELINE

    names = ["00-input.ir"] + [f"{i:02d}-{name}.ir" for i, (name, _) in enumerate(PIPELINE, start=1)]
    assert sorted(p.name for p in (out / "ir").iterdir()) == names
    assert (out / "model.ir").read_text().startswith("graph seed_mlp(")
    report = json.loads((out / "report.json").read_text())
    assert report["params"]["total"] == 7114
    assert report["trial_run"]["output_shapes"] == [[5, 10]]
    assert "7,114" in result.stdout and "(None, 10)" in result.stdout
    assert (out / "report.txt").read_text() in result.stdout


def test_build_output_folder_and_dump_passes(tmp_path):
    result = kcomp("build", EXAMPLES / "residual.k", "-o", tmp_path / "out", "--dump-passes")
    assert result.returncode == 0, result.stderr
    assert "--- 00-input.ir" in result.stdout and "graph residual(" in result.stdout
    assert (tmp_path / "out" / "report.json").exists()


def test_kcomp_dump_environment_variable(tmp_path):
    result = kcomp("build", EXAMPLES / "cnn_digits.k", "-o", tmp_path / "out", env={"KCOMP_DUMP": str(tmp_path / "dump")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "ir" / "01-verify.ir").exists()


def test_build_a_python_model_file(tmp_path):
    result = kcomp("build", EXAMPLES / "residual.py", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"] == "residual"


def test_summary_and_check():
    summary = kcomp("summary", EXAMPLES / "sentiment.k")
    assert summary.returncode == 0 and "328,353" in summary.stdout and "lstm (LSTM)" in summary.stdout
    check = kcomp("check", EXAMPLES / "mlp_digits.k")
    assert check.returncode == 0 and "mlp_digits, seed_mlp" in check.stdout


def test_failed_build_exits_1_with_one_clear_message(tmp_path):
    bad = tmp_path / "bad.k"
    bad.write_text("model m {\n  input(10)\n  dens(4)\n}\n")
    for verb in ("build", "check", "summary"):
        result = kcomp(verb, bad, cwd=tmp_path)
        assert result.returncode == 1
        assert "bad.k:3:3: unknown layer 'dens'. Did you mean 'dense'?" in result.stderr
        assert "Traceback" not in result.stderr
    debug = kcomp("--debug", "check", bad)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_several_models_need_model_flag():
    result = kcomp("summary", EXAMPLES / "mlp_digits.k")
    assert result.returncode == 1 and "--model" in result.stderr
    result = kcomp("summary", EXAMPLES / "mlp_digits.k", "--model", "seed_mpl")
    assert result.returncode == 1 and "Did you mean 'seed_mlp'" in result.stderr


def test_bad_usage_exits_2(tmp_path):
    assert kcomp("build").returncode == 2
    assert kcomp("frobnicate").returncode == 2
    missing = kcomp("build", tmp_path / "missing.k")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert kcomp("build", EXAMPLES / "cnn_digits.k", "--batch", 0).returncode == 2


def test_python_file_errors_are_reported_not_crashes(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise ValueError('oops')\n")
    result = kcomp("check", script)
    assert result.returncode == 1 and "ValueError: oops" in result.stderr and "Traceback" not in result.stderr
