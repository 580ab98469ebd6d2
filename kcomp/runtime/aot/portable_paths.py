"""File names that are the same on every machine, for the line info in PTX and cubin."""

import os
import re
from pathlib import Path

_FILE_DIRECTIVE = re.compile(r'^(\s*\.file\s+\d+\s+")([^"]*)(")', re.M)


def _portable_roots() -> list[tuple[str, str]]:
    import triton

    import kcomp.kernels

    folder = lambda module: os.path.realpath(list(module.__path__)[0])  # noqa: E731
    kcomp_folder = os.path.realpath(Path(__file__).parents[2])  # this file is kcomp/runtime/aot/portable_paths.py
    return [(folder(kcomp.kernels), "kcomp/kernels"), (kcomp_folder, "kcomp"), (folder(triton), "triton")]


def portable_path(path: str) -> str:
    """A source file's name as the same on every machine: relative to the kcomp or Triton package
    that holds it ("kcomp/kernels/matmul.py", "triton/language/standard.py"). Generated kernels
    are already named so ("kcomp_generated/matmul_<code digest>.py"); another absolute path keeps
    only its file name."""
    if not os.path.isabs(path):
        return path
    real = os.path.realpath(path)
    for root, name in _portable_roots():
        if real.startswith(root + os.sep):
            return f"{name}/{Path(os.path.relpath(real, root)).as_posix()}"
    return os.path.basename(path)


def portable_file_names(ptx: str) -> str:
    """The PTX with every `.file` directive's path made portable (see portable_path)."""
    return _FILE_DIRECTIVE.sub(lambda m: m.group(1) + portable_path(m.group(2)) + m.group(3), ptx)
