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
"triton/language/standard.py", "kcomp_generated/matmul_<code digest>.py") before ptxas, so a
build is the same bytes on every machine. Triton's own cache is not read here (an entry there
is not verified, and one damaged would be copied into a build): kcomp's AOT cache, whose entries
are checked when read, is the one cache of compiled kernels (compiler.compile_ahead_of_time).

Resource usage (registers, shared memory, spills) comes from `cuobjdump -res-usage`, which
Triton's wheel carries; tensor-core instructions are counted in the PTX (ptx_tensor_core_counts,
by the SASS opcode each becomes), and the SASS (`cuobjdump -sass`, about 0.5 s of CPU a kernel) is
disassembled only when asked (sass(), tensor_core_counts(), local_stores(); `kcomp build --emit
sass`). A process whose Triton runs in interpreter mode (TRITON_INTERPRET=1) cannot compile; run
AOT in another one.

    source = kernel_source(node, 3)
    result = compile_kernel(source, example_inputs(node.attrs["body"]), target="sm_90")
    result.registers, result.shared_bytes, result.spill_bytes, result.ptx_tensor_core_counts()

The parts:

    targets.py          the targets (sm_80, sm_89, sm_90): compute capability, shared-memory limit
    example_tensors.py  CPU tensors of a kernel node's shapes
    recording.py        the template's launch run with recorders standing in for its kernels
    signature.py        the recorded arguments specialised as triton.jit specialises them
    portable_paths.py   source file names the same on every machine, for the line info
    compile.py          triton.compile for the target, then the artifacts written; compile_key, what
                        decides the compiled code (a build compiles each key once)
    results.py          AotResult: PTX, cubin, and the resources cuobjdump / ptxas report
    parallel.py         many kernel nodes compiled in worker processes forked from a fork server (kcomp build --jobs)
"""

from kcomp.runtime.aot.compile import (
    PORTABLE_NAMES_KEY, compile_kernel, compile_key, compile_launch, compile_launches, compile_node,
    portable_line_info, write_artifacts,
)
from kcomp.runtime.aot.example_tensors import example_inputs, example_output, example_sizes
from kcomp.runtime.aot.portable_paths import portable_file_names, portable_path
from kcomp.runtime.aot.recording import Launch, record_launches
from kcomp.runtime.aot.results import TENSOR_CORE_OPCODES, AotResult, ptx_tensor_core_counts
from kcomp.runtime.aot.signature import DIVISIBILITY, POINTER_TYPES, specialize
from kcomp.runtime.aot.targets import SHARED_LIMITS, TARGETS, compute_capability

__all__ = [
    "AotResult", "DIVISIBILITY", "Launch", "POINTER_TYPES", "PORTABLE_NAMES_KEY", "SHARED_LIMITS", "TARGETS",
    "TENSOR_CORE_OPCODES", "compile_kernel", "compile_key", "compile_launch", "compile_launches", "compile_node",
    "compute_capability", "example_inputs", "example_output", "example_sizes", "portable_file_names",
    "portable_line_info", "portable_path", "ptx_tensor_core_counts", "record_launches", "specialize", "write_artifacts",
]
