"""Generated kernel modules on disk, imported from there.

A module's file name is a hash of its source, so the same kernel is written
once however many processes build it; writes are atomic (temp file + rename).
"""

import importlib.util
import sys
from pathlib import Path

from kcomp import config
from kcomp.codegen.module import KernelSource
from kcomp.utils.files import write_text_atomic


def kernels_dir() -> Path:
    return config.cache_dir() / "kernels"


def load_kernel(source: KernelSource):
    """The imported module for `source` (written to the cache first if new)."""
    module_name = f"kcomp_generated.{source.name}_{source.digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = kernels_dir() / f"{source.name}_{source.digest}.py"
    if not path.exists() or path.read_text() != source.text:
        write_text_atomic(path, source.text)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
