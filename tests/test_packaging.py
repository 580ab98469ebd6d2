"""A plain, non-editable `pip install .` carries every package, grammar/ and kernels/ included."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from in_tree_build import in_tree_build

ROOT = Path(__file__).resolve().parent.parent


def _source_packages() -> set[str]:
    found = {"kcomp.grammar", "kcomp.kernels"}
    for init in (ROOT / "kcomp").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


@pytest.mark.slow
def test_non_editable_install_has_every_package(tmp_path):
    target = tmp_path / "site"
    with in_tree_build():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(ROOT)],
            capture_output=True, text=True, timeout=600,
        )
    assert result.returncode == 0, result.stderr
    check = (
        "import importlib, kcomp, sys; "
        f"names = {sorted(_source_packages())!r}; "
        "[importlib.import_module(n) for n in names]; "
        "assert kcomp.__file__.startswith(sys.argv[1]), kcomp.__file__; "
        "from kcomp.models import Sequential; from kcomp.layers import Dense; "
        "m = Sequential([Dense(2, input_dim=3)]); print(m.count_params()); "
        "from kcomp import dsl; print(dsl.loads('model k { input(3) dense(4) }')['k'].count_params())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run([sys.executable, "-c", check, str(target)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["8", "16"]  # the .k grammar shipped as package data
    for pkg in _source_packages():
        assert (target / Path(*pkg.split("."))).is_dir(), f"{pkg} missing from the installed package"
    # The command's entry point, a module beside the package (kcomp_launch.py)
    command = subprocess.run([sys.executable, "-m", "kcomp_launch", "--help"], capture_output=True, text=True, env=env,
                             cwd=tmp_path, timeout=300)
    assert command.returncode == 0 and "build" in command.stdout, command.stderr
    assert "from kcomp_launch import run" in (target / "bin" / "kcomp").read_text()
