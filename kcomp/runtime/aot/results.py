"""What one compile gives: `AotResult` (PTX, cubin, the launch's configuration) and the resource
usage read from the cubin: registers, shared memory and spills from `cuobjdump -res-usage`
(else `ptxas -v` on the PTX), and the SASS from `cuobjdump -sass`.
"""

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from kcomp.runtime.aot.targets import SHARED_LIMITS

# SASS opcodes of tensor-core instructions: warpgroup MMA (Hopper) and warp MMA.
TENSOR_CORE_OPCODES = ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA")


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
