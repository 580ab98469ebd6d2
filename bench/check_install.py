"""Check that the installed kcomp imports and that every requirement it declares is installed at a
version it accepts (bench/gpu_check.sh installs kcomp with --no-deps beside the machine's packages).

  python bench/check_install.py
"""

import sys
from importlib import metadata

from packaging.requirements import Requirement


def main() -> int:
    import kcomp
    import kcomp.kernels  # noqa: F401 - ships inside the installed package only

    problems = []
    for text in metadata.requires("kcomp") or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra (test) or another platform's
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement}: {requirement.name} {version} is installed")
    for problem in problems:
        print(problem)
    print(f"kcomp {metadata.version('kcomp')} from {kcomp.__file__}: "
          + ("requirements met" if not problems else f"{len(problems)} requirement(s) not met"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
