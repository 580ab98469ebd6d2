"""The wheels folder the GPU machine installs kcomp from (bench/gpu_wheels.sh; that machine has no
network) holds everything kcomp needs beyond what the machine has (bench/gpu_machine.txt)."""

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from in_tree_build import in_tree_build
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 60 * 2**20  # what may be copied to the GPU machine beside the tree (issue 12)


def gpu_machine_packages() -> dict[str, Requirement]:
    lines = (ROOT / "bench" / "gpu_machine.txt").read_text().splitlines()
    requirements = [Requirement(line) for line in lines if line.strip() and not line.startswith(("#", "python="))]
    return {r.name.lower(): r for r in requirements}


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist that a plain install (no extras) needs."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(archive.read(name))
    requirements = [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def test_the_gpu_wheels_hold_what_the_gpu_machine_lacks(tmp_path):
    folder = tmp_path / "wheels"
    with in_tree_build():
        subprocess.run(["bash", str(ROOT / "bench" / "gpu_wheels.sh"), str(folder)], cwd=ROOT, check=True,
                       capture_output=True, env={**os.environ, "PIP": f"{sys.executable} -m pip"})
    wheels = {w.name.split("-")[0].lower().replace("_", "-"): w for w in folder.glob("*.whl")}
    assert "kcomp" in wheels, sorted(wheels)
    there = gpu_machine_packages()
    for requirement in wheel_requirements(wheels["kcomp"]):
        name = requirement.name.lower()
        assert name in there or name in wheels, f"{requirement} is neither on the GPU machine nor in the wheels"
        pinned = there.get(name)
        if pinned is not None and pinned.specifier:
            (version,) = [s.version for s in pinned.specifier]
            assert requirement.specifier.contains(version), \
                f"kcomp asks for {requirement}; the GPU machine has {name} {version}"
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < LIMIT_BYTES, f"{folder} holds {size / 2**20:.1f} MB"
