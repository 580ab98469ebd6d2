"""The compile suite: cold and warm builds, measured by bench/bench_build.py (a source checkout's
script, not installed). This suite runs it when it is there and keeps its output; else says so."""

import subprocess
import sys
from pathlib import Path

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_build.py"


def run(opts, needs_gpu: list, script: Path = BUILD_SCRIPT) -> dict:
    if not script.is_file():
        return {"status": "not yet", "reason": f"{script} is not there (a source checkout's bench/ holds it)"}
    command = [sys.executable, str(script)] + (["--quick"] if opts.quick else [])
    done = subprocess.run(command, capture_output=True, text=True)
    status = "ran" if done.returncode == 0 else "failed"
    return {"status": status, "command": " ".join(command), "returncode": done.returncode,
            "output": done.stdout[-20000:], "errors": done.stderr[-4000:]}
