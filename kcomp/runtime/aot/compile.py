"""Compile: a kernel node's recorded launch through triton.compile for a target (always compiled,
with portable line info: see the package docstring), and the artifacts written."""

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import torch

from kcomp.codegen.module import KernelSource
from kcomp.ir.graph import Node
from kcomp.runtime.aot.example_tensors import example_inputs, example_output
from kcomp.runtime.aot.portable_paths import portable_file_names
from kcomp.runtime.aot.recording import Launch, record_launches
from kcomp.runtime.aot.results import AotResult, _resource_usage
from kcomp.runtime.aot.signature import specialize
from kcomp.runtime.aot.targets import compute_capability
from kcomp.runtime.triton_mode import require_compiler
from kcomp.support.files import write_bytes_atomic, write_text_atomic

# Added to Triton's cache key for the compiles made here (Triton asks its stage hook for one):
# Triton's cache keys a kernel by its source, not by its files' paths.
PORTABLE_NAMES_KEY = "-kcomp-portable-file-names-1"


def portable_line_info():
    """Within: Triton's compiles give PTX (and so cubin, which ptxas makes from it) whose line
    info names source files by portable_path, not by where kcomp and Triton are installed.
    Triton's hook for its pipeline stages rewrites the PTX stage's output before ptxas."""
    from triton import knobs

    def hook(backend=None, stages=None, options=None, language=None, capability=None):
        if backend is None:  # Triton asks for the key first
            return PORTABLE_NAMES_KEY, hashlib.sha256(PORTABLE_NAMES_KEY.encode()).hexdigest()
        make_ptx = stages["ptx"]
        stages["ptx"] = lambda src, metadata: portable_file_names(make_ptx(src, metadata))

    return _knob(knobs.runtime, "add_stages_inspection_hook", hook)


def _always_compile():
    from triton import knobs

    return _knob(knobs.compilation, "always_compile", True)


@contextmanager
def _knob(section, name: str, value):
    """One of Triton's knobs set to `value` within, and put back after."""
    previous = getattr(section, name)
    setattr(section, name, value)
    try:
        yield
    finally:
        setattr(section, name, previous)


def _whole(ptx, cubin) -> bool:
    """Whether Triton's output looks whole: PTX naming its target, a cubin that is an ELF file."""
    return isinstance(ptx, str) and ".target" in ptx and isinstance(cubin, bytes) and cubin[:4] == b"\x7fELF"



def compile_launch(launch: Launch, name: str, template: str, target: str = "sm_90", precision: str = "tf32") -> AotResult:
    """Compile one recorded template launch for `target`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    cc = compute_capability(target)
    require_compiler()
    signature, constexprs, attrs, options = specialize(launch)
    kernel = launch.kernel
    target_spec = GPUTarget("cuda", cc, 32)
    known = make_backend(target_spec).parse_options({}).__dict__
    unknown = sorted(set(options) - set(known))
    if unknown:  # triton.jit refuses these at a launch too
        raise TypeError(f"{kernel.__name__}: launch options {unknown} are neither kernel arguments nor compile options")
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    # Always compiled: kcomp's AOT cache (compiler.py) is verified when read; Triton's own is not.
    with portable_line_info(), _always_compile():
        compiled = triton.compile(source, target=target_spec, options=options)
    metadata = compiled.metadata
    function = metadata.name
    ptx, cubin = compiled.asm["ptx"], compiled.asm["cubin"]
    if not _whole(ptx, cubin):
        raise RuntimeError(f"{kernel.__name__}: Triton returned an empty or damaged PTX/cubin for {target}")
    usage = _resource_usage(function, cubin, ptx, cc)
    plain = {k: getattr(v, "__name__", v) for k, v in constexprs.items()}  # JIT functions by name
    return AotResult(
        name=name, function=function, template=template, target=target, precision=precision, ptx=ptx, cubin=cubin,
        registers=usage.get("REG"), shared_bytes=metadata.shared, static_shared_bytes=usage.get("SHARED"),
        stack_bytes=usage.get("STACK"), local_bytes=usage.get("LOCAL"),
        num_warps=metadata.num_warps, num_stages=metadata.num_stages, signature=signature, constants=plain,
    )


def compile_launches(source: KernelSource, example_inputs: list[torch.Tensor], target: str = "sm_90",
                     precision: str = "tf32", out: torch.Tensor | None = None, config: dict | None = None) -> list[AotResult]:
    """Every kernel launch that `source`'s `launch` makes, compiled for `target` (one per launch)."""
    from kcomp.runtime.kernel_cache import load_kernel  # the cache imports codegen

    compute_capability(target)
    require_compiler()
    module = load_kernel(source)
    launches = record_launches(module, example_inputs, out=out, config=config, precision=precision)
    return [compile_launch(launch, source.name, source.template, target, precision) for launch in launches]


def compile_kernel(source: KernelSource, example_inputs: list[torch.Tensor], target: str = "sm_90",
                   precision: str = "tf32", out: torch.Tensor | None = None, config: dict | None = None) -> AotResult:
    """Compile the kernel `source`'s `launch` would run on these (CPU) inputs, for `target`, without a GPU.

    `out` (optional) is passed to launch, e.g. a bfloat16 buffer; `config` picks the
    block sizes (by default the template's first GPU candidate for the shape).
    """
    results = compile_launches(source, example_inputs, target, precision, out, config)
    if len(results) != 1:
        raise RuntimeError(f"{source.name} launches {len(results)} kernels; use compile_launches")
    return results[0]


def _example_operands(node: Node, batch: int, float_dtype: str | None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The node's example inputs at `batch`, and the output buffer a float_dtype build writes."""
    inputs = example_inputs(node, batch, float_dtype=float_dtype)
    return inputs, example_output(node, batch, float_dtype=float_dtype) if float_dtype else None


def compile_node(node: Node, index: int, target: str = "sm_90", precision: str = "tf32", batch: int = 128,
                 float_dtype: str | None = None) -> AotResult:
    """A fused graph's kernel node compiled at batch `batch` (its floats in float_dtype, when given)."""
    from kcomp.codegen.module import kernel_source

    inputs, out = _example_operands(node, batch, float_dtype)
    return compile_kernel(kernel_source(node, index), inputs, target, precision, out=out)


def compile_key(node: Node, index: int, precision: str = "tf32", batch: int = 128, float_dtype: str | None = None) -> str:
    """What decides the code compile_node makes of the node, for any target: its generated code
    (KernelSource.code_digest, names and comments left out) and each launch its template makes at
    `batch`, specialised as triton.jit specialises it (argument types, constexprs, divisibility,
    num_warps, num_stages). Nodes with the same key compile to the same PTX and cubin: the hidden
    layers of an MLP do, whatever their input widths, where the launch picks the same block sizes.
    Records the launches without compiling (milliseconds a kernel)."""
    from kcomp.codegen.module import kernel_source
    from kcomp.runtime.kernel_cache import load_kernel

    source = kernel_source(node, index)
    inputs, out = _example_operands(node, batch, float_dtype)
    parts = [source.template, source.code_digest]
    for launch in record_launches(load_kernel(source), inputs, out=out, precision=precision):
        signature, constexprs, attrs, options = specialize(launch)
        plain = sorted((k, getattr(v, "__name__", v)) for k, v in constexprs.items())  # JIT functions by name
        parts.append(repr((launch.kernel.__name__, signature, plain, sorted(attrs.items()), sorted(options.items()))))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def write_artifacts(result: AotResult, folder) -> list[Path]:
    """Write <name>.<target>.ptx, .cubin and .json (resource usage) into folder, each atomically."""
    folder = Path(folder)
    stem = f"{result.name}.{result.target}"
    paths = [folder / f"{stem}.ptx", folder / f"{stem}.cubin", folder / f"{stem}.json"]
    write_text_atomic(paths[0], result.ptx)
    write_bytes_atomic(paths[1], result.cubin)
    write_text_atomic(paths[2], json.dumps(result.resources(), indent=2, default=str) + "\n")
    return paths
