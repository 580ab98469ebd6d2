"""Counter-based random numbers shared by the torch reference and the Triton kernels.

Dropout's keep mask must be the same whether the reference executor or a
generated kernel computes it, and a training step must not read the step count
on the host. A counter-based generator gives both: the random word of element
`i` is a pure function of (key, counters), so any executor computes it on its
own, in any order, on the device.

The generator is Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
numbers: as easy as 1, 2, 3", SC 2011), exactly as `triton.language.random`
computes it (its `philox_impl`, `philox` and `uint_to_uniform_float`). Each call
gives four words; element i takes word i mod 4 of the call at counter i // 4:

    key      (k0, k1) = the low and high 32 bits of the op's 64-bit seed
    counters c0, c1   = the low and high 32 bits of i // 4
             c2       = the training step (0 outside a training step)
             c3       = 0
    word              = output word i mod 4 of 10 rounds
    uniform           = Triton's uint32 -> [0, 1) float32 conversion of the word

A kernel's lane computes the whole call for its element either way; the CPU
reference computes each call once for four consecutive elements (a quarter of
the rounds). keep_mask of 128 x 512 on one core: 0.83 ms, was 2.8-4.1 ms with a
call per element; of 128 x 64 0.23-0.29 ms, was 0.30 (numpy's per-operation
overhead dominates there; torch's bernoulli dropout: 0.05 ms). Everything here is int64
tensor arithmetic kept within 32 bits (no product overflows int64), on the
device of the tensor being dropped (CPU or CUDA); the step stays a tensor there,
so nothing is read back to the host.
"""

import numpy as np
import torch

MASK32 = 0xFFFFFFFF
# Philox4x32 constants (Salmon et al. 2011 and their Random123 library; the same values in
# Triton's random.py): the multipliers of a round's two products and the key's Weyl increments.
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9  # 2**32 / golden ratio
PHILOX_KEY_B = 0xBB67AE85  # 2**32 * (sqrt(3) - 1)
PHILOX_ROUNDS = 10
# Triton's uint_to_uniform_float scale for 32-bit words: the largest float32 s with
# (2**31 - 1) * s < 1, so the uniform is in [0, 1).
UINT32_TO_UNIFORM = 4.6566127342e-10


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of an int seed: its low and high 32 bits (as two's complement uint64)."""
    seed &= (1 << 64) - 1
    return seed & MASK32, seed >> 32


def derived_seed(seed: int, call: int) -> int:
    """A seed for the call-th use of `seed` in one graph (call >= 1), in [0, 2**31 - 1) as drawn
    seeds are: SplitMix64's output function (Steele, Lea, Flood, "Fast splittable pseudorandom
    number generators", OOPSLA 2014) of seed + call * its golden-ratio increment, so nearby seeds
    and calls give unrelated keys."""
    z = (seed + call * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & ((1 << 64) - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & ((1 << 64) - 1)
    return (z ^ (z >> 31)) % (2**31 - 1)


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of the 64-bit product of the constant `a` and uint32 values `b`.

    The product can reach 2**64, past int64: split `a` in 16-bit halves, so each
    partial product stays below 2**48. In-place steps on the fresh partial
    products keep the reference from allocating a tensor per operation.
    """
    low_part = b * (a & 0xFFFF)  # < 2**48
    high_part = b * (a >> 16)  # < 2**48; the product is high_part * 2**16 + low_part
    hi = (low_part >> 16).add_(high_part).bitwise_right_shift_(16)
    lo = high_part.bitwise_and_(0xFFFF).bitwise_left_shift_(16).add_(low_part).bitwise_and_(MASK32)
    return hi, lo


def philox(key: tuple[int, int], c0, c1, c2, c3) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 of the counters (int64 tensors holding uint32 values, broadcastable)."""
    k0, k1 = key
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(PHILOX_ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(PHILOX_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b.bitwise_xor_(c1).bitwise_xor_(k0), lo_b, hi_a.bitwise_xor_(c3).bitwise_xor_(k1), lo_a
        k0, k1 = (k0 + PHILOX_KEY_A) & MASK32, (k1 + PHILOX_KEY_B) & MASK32  # the key schedule is host-side ints
    return c0, c1, c2, c3


def philox_on_cpu(key: tuple[int, int], c0, c1, c2, c3) -> tuple[torch.Tensor, ...]:
    """philox(...) for CPU tensors, the same bits in about a quarter of the time (measured: 0.21
    against 0.84 ms of CPU for the first word of 8192 counters, 1 thread): numpy's uint64 products of two
    uint32 values are exact (below 2**64, where unsigned arithmetic is defined), so a round's high
    and low words are one multiply, a shift and a mask each, where int64 needs the 16-bit split of
    _mul_hi_lo. Counters that are one value (the step, the fourth) stay scalars until a round mixes
    them with the index."""
    shape = tuple(torch.broadcast_shapes(c0.shape, c1.shape, c2.shape, c3.shape))
    k0, k1 = key
    c0, c1, c2, c3 = (t.numpy().view(np.uint64) for t in (c0, c1, c2, c3))
    mask, shift = np.uint64(MASK32), np.uint64(32)
    round_a, round_b = np.uint64(PHILOX_ROUND_A), np.uint64(PHILOX_ROUND_B)
    for _ in range(PHILOX_ROUNDS):
        product_b, product_a = c2 * round_b, c0 * round_a
        c0, c1 = (product_b >> shift) ^ c1 ^ np.uint64(k0), product_b & mask
        c2, c3 = (product_a >> shift) ^ c3 ^ np.uint64(k1), product_a & mask
        k0, k1 = (k0 + PHILOX_KEY_A) & MASK32, (k1 + PHILOX_KEY_B) & MASK32
    words = []
    for word in (c0, c1, c2, c3):
        word = np.asarray(word)  # numpy makes 0-d results scalars
        if word.shape != shape or not word.flags.writeable:  # every counter one value: each element's word alike
            word = np.broadcast_to(word, shape).copy()
        words.append(torch.from_numpy(word.view(np.int64)))
    return tuple(words)


def _philox_calls(key, calls: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four words of the calls at counters (calls' low and high 32 bits, the step, 0)."""
    zero = torch.zeros((), dtype=torch.int64, device=calls.device)
    counters = (calls & MASK32, calls >> 32, step, zero)
    return philox_on_cpu(key, *counters) if calls.device.type == "cpu" else philox(key, *counters)


def uint32_to_uniform(word: torch.Tensor) -> torch.Tensor:
    """Triton's conversion of a uint32 word to a float32 in [0, 1): read it as int32, fold the
    negatives onto the non-negatives (~x), scale by UINT32_TO_UNIFORM in float32. On the CPU in
    numpy on 32-bit words (the same conversion and float32 product, a fifth of the passes' bytes)."""
    if word.device.type == "cpu":
        signed = word.numpy().astype(np.uint32).view(np.int32)
        folded = np.where(signed < 0, ~signed, signed)
        return torch.from_numpy(np.asarray(folded.astype(np.float32) * np.float32(UINT32_TO_UNIFORM)))
    signed = torch.where(word >= 2**31, word - 2**32, word)
    folded = torch.where(signed < 0, ~signed, signed)  # 0 .. 2**31 - 1, exact in the float32 rounding below
    return folded.to(torch.float32) * torch.tensor(UINT32_TO_UNIFORM, dtype=torch.float32, device=word.device)


def step_counter(step: torch.Tensor | None, device) -> torch.Tensor:
    """The step tensor (a float scalar: 1, 2, 3, ...) as a uint32 counter, computed on its device."""
    if step is None:
        return torch.zeros((), dtype=torch.int64, device=device)
    return step.to(device=device).to(torch.int64) & MASK32


def uniform_at(index: torch.Tensor, seed: int, step: torch.Tensor | None) -> torch.Tensor:
    """The float32 uniform in [0, 1) of each element index (int64, any shape) at this step: word
    index mod 4 of the call at counter index // 4."""
    words = _philox_calls(seed_key(seed), index >> 2, step_counter(step, index.device))
    lane = (index & 3)[..., None]
    return uint32_to_uniform(torch.stack(words, dim=-1).gather(-1, lane)[..., 0])


def uniform(shape, seed: int, step: torch.Tensor | None, device) -> torch.Tensor:
    """One float32 uniform in [0, 1) per element of `shape`, from (seed, step, flat row-major index):
    uniform_at of 0, 1, 2, ..., each call's four words laid out in a row for four elements."""
    numel = 1
    for d in shape:
        numel *= int(d)  # the shape's sizes are host ints: no device read
    on_cpu = torch.device(device).type == "cpu" and (step is None or step.device.type == "cpu")
    if on_cpu and numel <= AHEAD_MAX_ELEMENTS:
        return _uniform_ahead(numel, seed, 0 if step is None else int(step)).reshape(tuple(shape)).clone()
    return _uniforms(numel, seed, step_counter(step, device), device).reshape(tuple(shape))


def _uniforms(numel: int, seed: int, counters: torch.Tensor, device) -> torch.Tensor:
    """uniform's values of 0 .. numel - 1 at each step counter: counters' shape + (numel,)."""
    calls = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device)
    words = torch.stack(_philox_calls(seed_key(seed), calls, counters[..., None]), dim=-1)
    return uint32_to_uniform(words.reshape(*counters.shape, -1)[..., :numel])


# A small mask on the CPU costs numpy's per-call overhead, not arithmetic (about a hundred calls
# of a few microseconds each): such uniforms are drawn STEPS_AHEAD training steps at a time, the
# steps' counters one more axis of the same calls, and kept until a step outside the block asks.
# keep_mask of 32 x 64, one core: 0.13 ms a step drawn alone, 0.02 ms a step drawn 16 ahead.
STEPS_AHEAD = 16
AHEAD_MAX_ELEMENTS = 8192  # a block: 16 x 8192 float32 = 512 KiB
AHEAD_KEPT = 32  # blocks kept, (seed, size) each; the oldest go first
_ahead: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}


def _uniform_ahead(numel: int, seed: int, step: int) -> torch.Tensor:
    key = (seed, numel)
    first, block = _ahead.get(key, (None, None))
    if first is None or not 0 <= step - first < STEPS_AHEAD:
        first = step
        counters = (torch.arange(STEPS_AHEAD, dtype=torch.int64) + step) & MASK32
        block = _uniforms(numel, seed, counters, "cpu")
        _ahead.pop(key, None)
        _ahead[key] = (first, block)
        while len(_ahead) > AHEAD_KEPT:
            _ahead.pop(next(iter(_ahead)))
    return block[step - first]


def keep_mask(shape, rate: float, seed: int, step: torch.Tensor | None, device) -> torch.Tensor:
    """Dropout's keep mask: an element is kept where its uniform is >= rate (compared in float32)."""
    threshold = torch.tensor(rate, dtype=torch.float32, device=device)
    return uniform(shape, seed, step, device) >= threshold
