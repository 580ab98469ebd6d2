"""Generated kernel modules, imported from their source text in memory.

A module is named by its template and the digest of its code (`kcomp_generated.<template>_<digest>`,
KernelSource.code_digest: names and comments left out), so each code is imported once per
process: kernels that differ only in the layers they name (the hidden Dense layers of an MLP)
share one module, its @triton.jit functions, and so Triton's compiles of them. Its code carries
the file name `kcomp_generated/<template>_<digest>.py`, the same on every machine: Triton writes
that name into the line info of the PTX and cubin it compiles, which would otherwise hold the
path of a cache folder. The text of the first kernel imported is registered with `linecache` and
the module's loader, so `inspect.getsource` (which triton.jit reads) and tracebacks see it with
no file on disk; the others' texts differ from it only in names and comments.
Nothing is written or read from the cache folder, so a damaged or unwritable cache cannot
break a kernel's import. (`kcomp build --emit triton` writes each kernel as a .py file.)
"""

import linecache
import sys
import types

from kcomp.codegen.module import KernelSource


class _SourceLoader:
    """The loader of a generated module: gives its source to linecache and inspect."""

    def __init__(self, text: str):
        self.text = text

    def get_source(self, name):
        return self.text


def generated_file_name(source: KernelSource) -> str:
    return f"kcomp_generated/{source.template}_{source.code_digest}.py"


def load_kernel(source: KernelSource):
    """The imported module for `source`."""
    module_name = f"kcomp_generated.{source.template}_{source.code_digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    file_name = generated_file_name(source)
    module = types.ModuleType(module_name)
    module.__file__ = file_name
    module.__loader__ = _SourceLoader(source.text)
    # mtime None: linecache.checkcache keeps the entry although no such file exists.
    linecache.cache[file_name] = (len(source.text), None, source.text.splitlines(keepends=True), file_name)
    sys.modules[module_name] = module
    try:
        exec(compile(source.text, file_name, "exec"), module.__dict__)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
