"""The README's Python examples run as written, in order, in one session (a user's first hour)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start (Python)") : text.index("## Architecture")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_its_examples():
    assert len(python_blocks()) >= 5


def test_the_readme_examples_run_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("keras")
    monkeypatch.chdir(tmp_path)  # the examples write files
    namespace = {"__name__": "readme"}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block, then let pytest show the traceback
            raise AssertionError(f"README python block {i + 1} failed: {e!r}\n{block}") from e
    assert (tmp_path / "cnn.keras").is_file() and (tmp_path / "from_keras.keras").is_file()
    assert "7,114" in capsys.readouterr().out  # the seed model's parameter count, as Keras prints it
