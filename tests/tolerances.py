"""How close a computed tensor must be to its oracle: one table, by the dtype of the values compared
and by how many roundings can pile up on one element.

Every test that checks kcomp's numbers against an oracle on the CPU (a generated kernel against
the reference executor, a compiled training step against the reference step, kcomp against Keras)
takes rtol and atol here, through tests/kernel_helpers.py or directly. A comparison passes where
|got - want| <= atol + rtol * |want| for every element (numpy's assert_allclose).

The kinds, tightest first (float32 rounds to 2**-24 ~ 6e-8 relative per operation):

  exact         the kernel repeats torch's correctly rounded operations in the same order
  update        one optimizer step of O(1) tensors, against a float64 reference
  elementwise   each element is a few operations of its inputs (pointwise expressions, pools,
                pool gradients, softmax and layer-normalization rows, cross-entropy)
  cancelling    FTRL's update: a difference of terms up to 1 / lr times larger than the result
  accumulating  each element sums tens of products (a Dense or Conv2D forward: K = features or
                kh * kw * channels, up to ~100), and small models made of such layers
  long          sums of hundreds to thousands of terms (the conv gradients, over the batch and
                the image or over every tap and filter; reductions of whole images) and whole
                training steps (forward, backward, optimizer)
  deep          six 64-wide Dense layers in a row whose activations grow to ~3e3
  resampling    images resampled through a transform whose cos / sin are kernels/trig.py's (1.5 ulps)

"Measured" is the worst element over a kind's tests on this code (CPU torch 2.13, Triton 3.9's
interpreter) as the fraction of the tolerance it used: 1.0 would fail. Each test took the tightest
kind that fits its computation and was never looser than the bound it had before this table.

The GPU runs (tests/test_gpu_templates.py, tests/test_gpu.py) keep their own bounds per precision
(IEEE float32, TF32, bfloat16): their errors come from a GPU's arithmetic, which only a GPU can
measure.
"""

FLOAT16 = dict(rtol=2e-2, atol=2e-2)

TOLERANCES = {
    "float32": {
        # Dropout's mask and 1 / (1 - rate) scale, a count's reciprocal spread over a batch, a
        # reduction over no axes: IEEE rounds + - * / exactly, so the same operations in the same
        # order agree bit for bit. Measured: 0 difference.
        "exact": dict(rtol=0.0, atol=0.0),
        # The optimizer kernel's new parameters and slots against optimizer_update's reference in
        # float64: the float32 rounding of O(1) values, a few ulps; near zero only the rounding of
        # lr * O(1), below 1e-7. Measured: 0.27 (Adamax).
        "update": dict(rtol=1e-5, atol=1e-7),
        # A few float32 operations an element; Triton's exp, log, tanh and erf are not torch's. A
        # composition loses relative precision where it is small: mish(-8.5) = -1.7e-3 computes
        # log(1 + exp(x)) with 1 + 2e-4 rounded, 5e-4 of the value, which the absolute floor
        # covers. Measured: 0.83 (that mish, against float64).
        "elementwise": dict(rtol=1e-5, atol=1e-6),
        # FTRL's parameter is -z / quadratic with z summing terms up to 1 / lr = 20 times larger:
        # float32 keeps ~1e-7 of those terms, hence 20 times update's floor. Measured: 0.57.
        "cancelling": dict(rtol=1e-5, atol=2e-6),
        # A sum of K products of random sign rounds to ~sqrt(K) ulps of the terms' size: K up to
        # ~100 of O(1) values gives ~1e-6, which an output near zero keeps as an absolute error.
        # Measured: 0.15 (a 3x3 conv over 7 channels into 37 filters, with BN and silu).
        "accumulating": dict(rtol=1e-5, atol=1e-5),
        # Hundreds to thousands of terms (333 taps and filters, 429 output pixels in the conv
        # gradients' several-tile cases; 3150 in a reduction) of values up to ~10, or kernels in a
        # chain: errors to ~2e-5. Measured: 0.45 (conv2d_backprop_input over 333 terms).
        "long": dict(rtol=1e-4, atol=1e-5),
        # Six Dense(64) + relu in a row with weights of std 0.5 (randomize): activations reach ~3e3
        # and each layer rounds relative to them; an output near zero is a difference of such
        # values (the worst: 3.7e-4 off at 2.9). Measured: 0.62 (test_kernels_dense.py, the
        # buffer-reuse test).
        "deep": dict(rtol=2e-4, atol=2e-5),
        # Images of 0..255 resampled through a transform whose cos and sin are another library's
        # (numpy's under the interpreter, libdevice's on a GPU, torch's in the reference): one ulp
        # of cos moves a source point of a 9-pixel image by ~1e-6 pixel, which a bilinear blend of
        # neighbours up to 255 apart turns into ~3e-4. Measured: 0.16 (RandomRotation(0.4) bilinear,
        # 64 images of 7x9x5: 2974 of 20160 values differ; none with nearest).
        "resampling": dict(rtol=1e-5, atol=1e-3),
    },
    # Both sides round each output to float16 (2**-10 ~ 1e-3 relative; 7.8e-3 at values of 8 to
    # 16), the reference after each torch op, the kernel once after float32 arithmetic: about 20
    # float16 ulps whatever the computation. Measured: 0.09 (a Dense with exp, add and BN folded
    # into its prologue).
    "float16": {"elementwise": FLOAT16, "accumulating": FLOAT16, "long": FLOAT16},
}


def tolerance(dtype, kind: str) -> dict:
    """rtol and atol (assert_allclose's keywords) for values of `dtype` (a name or a torch dtype)
    compared as `kind`; integers and booleans compare exactly."""
    name = str(dtype).removeprefix("torch.")
    if name.startswith(("int", "uint", "bool")):
        return TOLERANCES["float32"]["exact"]
    return TOLERANCES[name][kind]
