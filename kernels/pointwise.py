"""Pointwise template: OUT[i] = BODY(i) over a flat, contiguous output.

Hook: BODY(offs, mask, C, X0..X7) loads what it needs (a full tensor at offs,
a last-axis vector at offs % C, or a scalar) and returns the value; codegen
generates it from a chain of elementwise IR nodes. One launch replaces one
kernel per op, so intermediate values never reach memory. `offs` is also the
flat element index from which dropout draws its mask (kernels/random.py).
"""

import triton
import triton.language as tl


@triton.jit
def pointwise_kernel(OUT, numel, C, X0, X1, X2, X3, X4, X5, X6, X7, BODY: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    y = BODY(offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7)
    tl.store(OUT + offs, y.to(OUT.dtype.element_ty), mask=mask)


GPU_CONFIGS = [dict(BLOCK=1024, num_warps=4), dict(BLOCK=2048, num_warps=8), dict(BLOCK=4096, num_warps=8)]
INTERPRETER_CONFIG = dict(BLOCK=1024, num_warps=4)


def candidate_configs(numel: int, interpret: bool) -> list[dict]:
    return [INTERPRETER_CONFIG] if interpret else GPU_CONFIGS


def grid(numel: int, config: dict) -> tuple[int]:
    return (triton.cdiv(numel, config["BLOCK"]),)
