"""Dropout's mask inside generated kernels: Philox4x32-10 of (seed, step, flat element index).

Generated epilogues and pointwise bodies call `dropout(x, offs, step, SEED, RATE, SCALE)`
with `offs` the flat row-major index of each element of the op's output and
`step` the training step (a float scalar loaded from the graph's step input).
The random word is Triton's own Philox (triton.language.random), keyed by the
64-bit SEED: word offs mod 4 of the call on counters (offs // 4 low 32 bits,
high 32 bits, step, 0); the torch reference computes the same bits in
kcomp/random.py (a call per four elements there), so a fused kernel and the
reference executor keep exactly the same elements.
"""

import triton
import triton.language as tl
from triton.language.random import philox, uint_to_uniform_float


@triton.jit
def philox_uniform(offs, step, SEED: tl.constexpr):
    """A float32 in [0, 1) per element index in `offs` (int64-safe), at training step `step`:
    word offs mod 4 of the call at counter offs // 4."""
    offs = offs.to(tl.int64)
    call = offs >> 2
    c0 = call.to(tl.uint32)  # the low 32 bits
    c1 = (call >> 32).to(tl.uint32)
    zero = c0 * 0
    # The step (a float scalar, or the literal 0.0 without a step input) broadcast to the block;
    # written with block arithmetic, not tl.to_tensor, which Triton 3.6 (the GPU machine's) lacks.
    c2 = (zero.to(tl.float32) + step).to(tl.int64).to(tl.uint32)
    w0, w1, w2, w3 = philox(SEED, c0, c1, c2, zero)
    lane = offs & 3
    word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    return uint_to_uniform_float(word)


@triton.jit
def dropout(x, offs, step, SEED: tl.constexpr, RATE: tl.constexpr, SCALE: tl.constexpr):
    """Inverted dropout of float32 `x`: keep where the uniform is >= RATE, scaled by SCALE = 1 / (1 - RATE)."""
    keep = philox_uniform(offs, step, SEED) >= RATE
    return tl.where(keep, x * SCALE, 0.0)
