"""Ahead-of-time compilation: a generated kernel module to PTX and cubin, with no GPU.

The kernel compiled is exactly the one the module's `launch` would start: we
import the module, swap its template's kernels (e.g. `matmul_kernel` in kcomp.kernels.matmul)
for recorders, call `launch` with CPU example tensors (asking for GPU block sizes), and compile
the recorded call
(arguments, constexprs, num_warps, num_stages) for the target with
`triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`. Arguments are
specialised as `triton.jit` specialises them at a launch (integers equal to 1
become constants; pointers and integers divisible by 16 are marked so), so the
code is the code a GPU would run for inputs of those shapes.

The PTX and cubin do not depend on where kcomp, Triton or the cache live: Triton's line info
names source files, and `portable_line_info` rewrites those names ("kcomp/kernels/matmul.py",
"triton/language/standard.py", "kcomp_generated/kernel_0_<digest>.py") before ptxas, so a
build is the same bytes on every machine. Triton's own cache is not read here (an entry there
is not verified, and one damaged would be copied into a build): kcomp's AOT cache, whose entries
are checked when read, is the one cache of compiled kernels (compiler.compile_ahead_of_time).

Resource usage (registers, shared memory, spills) and the SASS come from
`cuobjdump`, which Triton's wheel carries. A process whose Triton runs in
interpreter mode (TRITON_INTERPRET=1) cannot compile; run AOT in another one.

    source = kernel_source(node, 3)
    result = compile_kernel(source, example_inputs(node.attrs["body"]), target="sm_90")
    result.registers, result.shared_bytes, result.spill_bytes, result.tensor_core_counts()
"""

import hashlib
import json
import numbers
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from kcomp.codegen.module import KernelSource
from kcomp.errors import KcompError
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.types import BATCH, FLOAT_DTYPES, TORCH_DTYPES, is_static
from kcomp.runtime.plan import concrete
from kcomp.runtime.triton_mode import require_compiler
from kcomp.support.files import write_bytes_atomic, write_text_atomic

# Target name -> compute capability. Triton compiles sm_90 as sm_90a (wgmma, TMA).
TARGETS = {"sm_80": 80, "sm_89": 89, "sm_90": 90}
# The most dynamic shared memory one block may ask for (the device's opt-in limit, which
# Triton checks at launch): A100 163 KiB, Ada 99 KiB, H100/H200 227 KiB.
SHARED_LIMITS = {"sm_80": 166912, "sm_89": 101376, "sm_90": 232448}

# SASS opcodes of tensor-core instructions: warpgroup MMA (Hopper) and warp MMA.
TENSOR_CORE_OPCODES = ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA")

# torch dtype -> Triton pointer element type in a kernel signature.
POINTER_TYPES = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.uint8: "u8", torch.bool: "u1",
}
DIVISIBILITY = [["tt.divisibility", 16]]  # what triton.jit attaches to 16-divisible pointers and ints


def compute_capability(target: str) -> int:
    if target not in TARGETS:
        raise KcompError(f"Received: target={target!r}. Expected one of {', '.join(TARGETS)}.")
    return TARGETS[target]


# --- example inputs -----------------------------------------------------------------------------


def example_sizes(values, batch: int = 128, other: int = 64) -> dict[str, int]:
    """A size for every symbolic dimension of `values`: the batch "N" -> batch, any other symbol -> other."""
    sizes = {}
    for v in values:
        for d in v.shape:
            if not is_static(d):
                sizes[d] = batch if d == BATCH else other
    return sizes


def _body(node_or_body) -> Graph:
    return node_or_body.attrs["body"] if isinstance(node_or_body, Node) else node_or_body


def _example_tensor(v: Value, sizes: dict[str, int], float_dtype: str | None, generator) -> torch.Tensor:
    shape = concrete(v, sizes)
    if v.dtype in FLOAT_DTYPES:
        dtype = TORCH_DTYPES[float_dtype or v.dtype]
        return torch.randn(shape, generator=generator).to(dtype)
    return torch.zeros(shape, dtype=TORCH_DTYPES[v.dtype])  # ids and masks: only their shape matters here


def example_inputs(node_or_body, batch: int = 128, other: int = 64, float_dtype: str | None = None) -> list[torch.Tensor]:
    """CPU tensors for a kernel node's inputs (or a body graph's): the batch bound to `batch`.

    float_dtype="bfloat16" casts every floating input, as a `--dtype bfloat16`
    build would store it; integer inputs keep their dtype.
    """
    body = _body(node_or_body)
    sizes = example_sizes(body.inputs, batch, other)
    generator = torch.Generator().manual_seed(0)
    return [_example_tensor(v, sizes, float_dtype, generator) for v in body.inputs]


def example_output(node_or_body, batch: int = 128, other: int = 64, float_dtype: str | None = None) -> torch.Tensor:
    """The output buffer `launch(..., out=)` writes, in float_dtype when given (for bf16 stores)."""
    body = _body(node_or_body)
    sizes = example_sizes([*body.inputs, *body.outputs], batch, other)
    (v,) = body.outputs
    dtype = TORCH_DTYPES[float_dtype if float_dtype and v.dtype in FLOAT_DTYPES else v.dtype]
    return torch.empty(concrete(v, sizes), dtype=dtype)


# --- recording the launch -----------------------------------------------------------------------


@dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)` call made by a template's launch."""

    kernel: object  # the JITFunction
    grid: tuple
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a template kernel: `recorder[grid](*args, **kwargs)` records the call, runs nothing."""

    def __init__(self, kernel, launches: list[Launch]):
        self.kernel = kernel
        self.launches = launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch(self.kernel, tuple(grid), args, kwargs))

        return record

    def __getattr__(self, name):  # anything else a launch reads (arg_names, ...) comes from the kernel
        return getattr(self.kernel, name)


def record_launches(module, inputs, out=None, config=None, precision="tf32") -> list[Launch]:
    """Run module.launch on CPU tensors with its template's kernels replaced by recorders.

    The launch is the template module's (the generated module only binds it); told
    interpret=False it picks the GPU's block sizes although the tensors are on the CPU.
    """
    launches: list[Launch] = []
    template = sys.modules[type(module.BINDING).__module__]
    patched = {name: _Recorder(kernel, launches) for name, kernel in _own_kernels(template).items()}
    if not patched:
        raise RuntimeError(f"{template.__name__} defines no @triton.jit kernel")
    saved = {name: getattr(template, name) for name in patched}
    try:
        for name, value in patched.items():
            setattr(template, name, value)
        module.launch(*inputs, out=out, config=config, precision=precision, interpret=False)
    finally:
        for name, value in saved.items():
            setattr(template, name, value)
    if not launches:
        raise RuntimeError(f"{module.__name__}.launch launched no kernel")
    return launches


def _own_kernels(module) -> dict[str, object]:
    """The @triton.jit functions a template module defines (its kernels; device helpers too, which
    no launch calls from Python, so standing in for them changes nothing)."""
    from triton.runtime.jit import JITFunction

    return {name: value for name, value in vars(module).items()
            if isinstance(value, JITFunction) and value.fn.__module__ == module.__name__}


# --- signature, as triton.jit specialises a launch ----------------------------------------------


def _int_type(value: int) -> str:
    if -(2**31) <= value < 2**31:
        return "i32"
    if -(2**63) <= value < 2**63:
        return "i64"
    return "u64"


def specialize(launch: Launch) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) for ASTSource/compile from a recorded launch."""
    kernel = launch.kernel
    names = kernel.arg_names
    arg_kwargs = {k: v for k, v in launch.kwargs.items() if k in names}
    options = {k: v for k, v in launch.kwargs.items() if k not in names}
    bound = kernel.signature.bind(*launch.args, **arg_kwargs)
    bound.apply_defaults()
    signature, constexprs, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        name, value = param.name, bound.arguments[param.name]
        if isinstance(value, _Recorder):
            value = value.kernel
        aligned = []
        if param.is_constexpr or value is None:
            kind = "constexpr"
        elif isinstance(value, torch.Tensor):
            if value.dtype not in POINTER_TYPES:
                raise TypeError(f"{kernel.__name__}: argument {name} has dtype {value.dtype}, which has no Triton type")
            kind = "*" + POINTER_TYPES[value.dtype]
            if not param.do_not_specialize_on_alignment and value.data_ptr() % 16 == 0:
                aligned = DIVISIBILITY
        elif isinstance(value, bool):
            kind = "u1"
        elif isinstance(value, numbers.Integral):
            value = int(value)
            specialise = not param.do_not_specialize
            kind = "constexpr" if specialise and value == 1 else _int_type(value)
            if specialise and not param.do_not_specialize_on_alignment and value % 16 == 0:
                aligned = DIVISIBILITY
        elif isinstance(value, numbers.Real):
            kind = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: argument {name}={value!r} has no Triton type")
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = value
        attrs[(index,)] = aligned
    return signature, constexprs, attrs, options


# --- results ------------------------------------------------------------------------------------


@dataclass
class AotResult:
    """One kernel compiled for one target, and what it uses per thread block."""

    name: str  # kcomp's kernel name: "kernel_3"
    function: str  # the compiled Triton function: "matmul_kernel"
    template: str
    target: str  # "sm_90"
    precision: str
    ptx: str
    cubin: bytes
    registers: int | None  # per thread
    shared_bytes: int  # per block: the dynamic shared memory the launch asks for
    static_shared_bytes: int | None  # per block, besides (cuobjdump's SHARED)
    stack_bytes: int | None  # per thread: the stack frame, where ptxas puts spilled registers
    local_bytes: int | None  # per thread: other local memory
    num_warps: int
    num_stages: int
    signature: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)  # constexpr arguments: block sizes, EPILOGUE="epilogue", ...

    @cached_property
    def _sass(self) -> str:
        return _cuobjdump("-sass", self.cubin)

    def sass(self) -> str:
        """The cubin's machine code, as `cuobjdump -sass` prints it."""
        return self._sass

    def tensor_core_counts(self) -> dict[str, int]:
        """Tensor-core instructions in the SASS by opcode, e.g. {"HGMMA": 16} (only those present)."""
        counts = {}
        for opcode in re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9]+)", self.sass(), re.M):
            if opcode in TENSOR_CORE_OPCODES:
                counts[opcode] = counts.get(opcode, 0) + 1
        return counts

    @property
    def tensor_core_instructions(self) -> int:
        return sum(self.tensor_core_counts().values())

    @property
    def fits_shared(self) -> bool:
        """Whether a GPU of the target can launch it (else Triton raises OutOfResources there)."""
        return self.shared_bytes <= SHARED_LIMITS[self.target]

    @property
    def spill_bytes(self) -> int | None:
        """Local memory per thread. A Triton kernel inlines every call and keeps no local
        arrays, so all of it is registers ptxas could not hold (0 for a healthy kernel)."""
        if self.stack_bytes is None and self.local_bytes is None:
            return None
        return (self.stack_bytes or 0) + (self.local_bytes or 0)

    def local_stores(self) -> int:
        """STL instructions in the SASS: the spill stores."""
        return len(re.findall(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?STL\b", self.sass(), re.M))

    def resources(self) -> dict:
        """The numbers a report shows, JSON-ready."""
        return {
            "name": self.name, "function": self.function, "template": self.template, "target": self.target,
            "precision": self.precision, "registers": self.registers, "shared_bytes": self.shared_bytes,
            "static_shared_bytes": self.static_shared_bytes, "fits_shared": self.fits_shared,
            "spill_bytes": self.spill_bytes, "stack_bytes": self.stack_bytes, "local_bytes": self.local_bytes,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages, "constants": self.constants, "signature": self.signature,
            "tensor_cores": self.tensor_core_counts(),
        }

    def summary(self) -> str:
        tc = ", ".join(f"{n} {op}" for op, n in self.tensor_core_counts().items()) or "no tensor cores"
        return (
            f"{self.name} ({self.function}, {self.target}): {self.registers} registers, "
            f"{self.shared_bytes} B shared, {self.spill_bytes} B spilled, {tc}"
        )


def _cuobjdump(flag: str, cubin: bytes) -> str:
    from triton import knobs

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run(
            [knobs.nvidia.cuobjdump.path, flag, str(path)], capture_output=True, text=True, check=True
        ).stdout


def _resource_usage(function: str, cubin: bytes, ptx: str, cc: int) -> dict[str, int]:
    """REG, STACK, SHARED, LOCAL of `function`: cuobjdump -res-usage, else ptxas -v on the PTX."""
    try:
        text = _cuobjdump("-res-usage", cubin)
        match = re.search(rf"Function {re.escape(function)}:\s*\n\s*(.*)", text)
        if match:
            return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", match.group(1))}
    except (OSError, subprocess.CalledProcessError, RuntimeError):
        pass
    return _ptxas_usage(ptx, cc)


def _ptxas_usage(ptx: str, cc: int) -> dict[str, int]:
    """ptxas -v on the PTX, with the ptxas and register-allocation flag Triton compiles with."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        arch = f"sm_{cc}a" if cc == 90 else f"sm_{cc}"
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "kernel.ptx"
            path.write_text(ptx)
            text = subprocess.run(
                [get_ptxas(cc).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", str(path),
                 "-o", str(Path(folder) / "k.o")],
                capture_output=True, text=True, check=True,
            ).stderr
    except (ImportError, OSError, subprocess.CalledProcessError, RuntimeError):
        return {}
    usage = {}
    if m := re.search(r"Used (\d+) registers", text):
        usage["REG"] = int(m.group(1))
    if m := re.search(r"(\d+) bytes stack frame", text):
        usage["STACK"] = int(m.group(1))
    return usage


# --- compile ------------------------------------------------------------------------------------

# Added to Triton's cache key for the compiles made here (Triton asks its stage hook for one):
# Triton's cache keys a kernel by its source, not by its files' paths.
PORTABLE_NAMES_KEY = "-kcomp-portable-file-names-1"
_FILE_DIRECTIVE = re.compile(r'^(\s*\.file\s+\d+\s+")([^"]*)(")', re.M)


def _portable_roots() -> list[tuple[str, str]]:
    import triton

    import kcomp.kernels

    folder = lambda module: os.path.realpath(list(module.__path__)[0])  # noqa: E731
    kcomp_folder = os.path.realpath(Path(__file__).parent.parent)  # this file is kcomp/runtime/aot.py
    return [(folder(kcomp.kernels), "kcomp/kernels"), (kcomp_folder, "kcomp"), (folder(triton), "triton")]


def portable_path(path: str) -> str:
    """A source file's name as the same on every machine: relative to the kcomp or Triton package
    that holds it ("kcomp/kernels/matmul.py", "triton/language/standard.py"). Generated kernels
    are already named so ("kcomp_generated/kernel_0_<digest>.py"); another absolute path keeps
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


def compile_node(node: Node, index: int, target: str = "sm_90", precision: str = "tf32", batch: int = 128,
                 float_dtype: str | None = None) -> AotResult:
    """A fused graph's kernel node compiled at batch `batch` (its floats in float_dtype, when given)."""
    from kcomp.codegen.module import kernel_source

    inputs = example_inputs(node, batch, float_dtype=float_dtype)
    out = example_output(node, batch, float_dtype=float_dtype) if float_dtype else None
    return compile_kernel(kernel_source(node, index), inputs, target, precision, out=out)


def write_artifacts(result: AotResult, folder) -> list[Path]:
    """Write <name>.<target>.ptx, .cubin and .json (resource usage) into folder, each atomically."""
    folder = Path(folder)
    stem = f"{result.name}.{result.target}"
    paths = [folder / f"{stem}.ptx", folder / f"{stem}.cubin", folder / f"{stem}.json"]
    write_text_atomic(paths[0], result.ptx)
    write_bytes_atomic(paths[1], result.cubin)
    write_text_atomic(paths[2], json.dumps(result.resources(), indent=2, default=str) + "\n")
    return paths
