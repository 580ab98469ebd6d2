"""sin and cos of a float32 angle without libdevice's slow path (a rotation's, in kernels/augment.py).

Why not tl.sin / tl.cos: libdevice's __nv_sinf and __nv_cosf carry a Payne-Hanek reduction for
|x| > 105615, which keeps a 28-byte array in local memory. Triton 3.6 (the GPU machine's) leaves
it in every kernel that calls them: the cifar_augment step's affine_transform compiled for sm_90
with 32 B of local memory and 4 local stores (clean-clone CI run, 2026-12-03). Triton 3.9 happened
to drop it there, but not in a two-line kernel that reads its angle from memory.

Here the angle is reduced by the nearest multiple k of pi/2 in three float32 steps (Cody-Waite: the
parts of pi/2 have few enough mantissa bits that k times each is exact for |k| < 2**12, so
|x| < 6400 rad), and sin and cos of the rest (|r| <= pi/4) are Cephes's single-precision minimax
polynomials (sinf.c / cosf.c, Cephes Math Library 2.2, S. L. Moshier: coefficients and the
constants' split of pi/4, doubled here). Measured against float64 under the interpreter
(tests/test_kernels_trig.py, 200000 angles each): within 1.5 float32 ulps over |x| <= 100 rad (torch's
sin and cos: 0.6), and within 8e-8 absolute up to |x| = 6000. NaN and inf give NaN, as sin and cos do.
"""

import triton
import triton.language as tl

TWO_OVER_PI = tl.constexpr(0.6366197723675814)
# pi/2 = PIO2_HIGH + PIO2_MID + PIO2_LOW: the first two exact in few bits (Cephes DP1, DP2 times two).
PIO2_HIGH = tl.constexpr(1.5703125)
PIO2_MID = tl.constexpr(4.837512969970703125e-4)
PIO2_LOW = tl.constexpr(7.54978995489188216e-8)


@triton.jit
def sin_cos(x):
    """(sin(x), cos(x)) of a float32 scalar or tile, |x| < 6400 (beyond: the reduction loses bits)."""
    k = tl.floor(x * TWO_OVER_PI + 0.5)
    r = ((x - k * PIO2_HIGH) - k * PIO2_MID) - k * PIO2_LOW
    z = r * r
    s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r
    c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0
    # x = k pi/2 + r: the quadrant k mod 4 swaps and negates (0: s, c; 1: c, -s; 2: -s, -c; 3: -c, s).
    quadrant = k.to(tl.int32) & 3
    swap = (quadrant & 1) == 1
    sin = tl.where(swap, c, s)
    cos = tl.where(swap, s, c)
    sin = tl.where(quadrant >= 2, -sin, sin)
    cos = tl.where((quadrant == 1) | (quadrant == 2), -cos, cos)
    return sin, cos
