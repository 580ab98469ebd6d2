"""What one compile gives: `AotResult` (PTX, cubin, the launch's configuration) and the resource
usage read from the cubin: registers, shared memory and spills from `cuobjdump -res-usage`
(else `ptxas -v` on the PTX), tensor-core instructions counted in the PTX, and, only when asked,
the SASS from `cuobjdump -sass`.

Why the PTX by default: disassembling a cubin (`cuobjdump -sass`, which runs nvdisasm) took 0.44 s
of CPU a kernel on the 2-core build machine, about 40% of a cold build, where `-res-usage` takes
0.01 s. The PTX names the tensor-core instructions ptxas turns into SASS ones: `wgmma.mma_async`
into HGMMA (IGMMA for 8-bit integers, QGMMA for 8-bit floats), `mma.sync` into HMMA (IMMA, QMMA,
DMMA for float64). So the PTX's counts are reported under the SASS opcodes they become; that they
agree with the SASS's is tested on the example models' kernels (tests/test_aot_ptx_facts.py), and
`kcomp build --emit sass` disassembles and counts in the SASS.
"""

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from kcomp.runtime.aot.targets import SHARED_LIMITS

# SASS opcodes of tensor-core instructions: warpgroup MMA (Hopper) and warp MMA.
TENSOR_CORE_OPCODES = ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA", "QMMA", "DMMA")
# A PTX tensor-core instruction (after an optional predicate) and its dotted modifiers.
_PTX_MMA = re.compile(r"^\s*(?:@!?%\w+\s+)?(wgmma\.mma_async|mma)((?:\.[\w:]+)+)", re.M)
_FP8 = {"e4m3", "e5m2", "e3m2", "e2m3", "e2m1"}
_INTEGER = {"s8", "u8", "s4", "u4", "b1"}
_HALF = {"f16", "bf16", "tf32"}


def _sass_opcode(instruction: str, modifiers: str) -> str:
    """The SASS opcode a PTX MMA becomes: its operand types pick the kind (H, I, Q, D), wgmma the
    warpgroup form (HGMMA) and mma.sync the warp form (HMMA). The PTX instruction's own name where
    its operand types are not known here (counted, not guessed at)."""
    parts = set(modifiers.strip(".").split("."))
    kind = ("Q" if parts & _FP8 else "I" if parts & _INTEGER else "H" if parts & _HALF
            else "D" if "f64" in parts and instruction == "mma" else None)
    if kind is None:
        return instruction
    return kind + ("GMMA" if instruction.startswith("wgmma") else "MMA")


def ptx_tensor_core_counts(ptx: str) -> dict[str, int]:
    """Tensor-core instructions in the PTX, by the SASS opcode each becomes: {"HGMMA": 4}."""
    counts: dict[str, int] = {}
    for instruction, modifiers in _PTX_MMA.findall(ptx):
        opcode = _sass_opcode(instruction, modifiers)
        counts[opcode] = counts.get(opcode, 0) + 1
    return counts


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

    def ptx_tensor_core_counts(self) -> dict[str, int]:
        """Tensor-core instructions in the PTX, by the SASS opcode each becomes (no disassembly)."""
        return ptx_tensor_core_counts(self.ptx)

    def tensor_core_counts(self) -> dict[str, int]:
        """Tensor-core instructions in the SASS by opcode, e.g. {"HGMMA": 16} (only those present);
        disassembles the cubin (see ptx_tensor_core_counts for the cheap reading)."""
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

    def resources(self, sass: bool = False) -> dict:
        """The numbers a report shows, JSON-ready. Tensor cores are counted in the PTX; sass=True
        also disassembles the cubin and adds the SASS's counts (sass_tensor_cores) and its spill
        stores (local_stores)."""
        extra = {"sass_tensor_cores": self.tensor_core_counts(), "local_stores": self.local_stores()} if sass else {}
        return {
            "name": self.name, "function": self.function, "template": self.template, "target": self.target,
            "precision": self.precision, "registers": self.registers, "shared_bytes": self.shared_bytes,
            "static_shared_bytes": self.static_shared_bytes, "fits_shared": self.fits_shared,
            "spill_bytes": self.spill_bytes, "stack_bytes": self.stack_bytes, "local_bytes": self.local_bytes,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages, "constants": self.constants, "signature": self.signature,
            "tensor_cores": self.ptx_tensor_core_counts(), **extra,
        }

    def summary(self) -> str:
        tc = ", ".join(f"{n} {op}" for op, n in self.ptx_tensor_core_counts().items()) or "no tensor cores"
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
