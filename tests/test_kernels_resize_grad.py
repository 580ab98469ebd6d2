"""The resize_grad template (kernels/resize_grad.py) under Triton's interpreter: the gradient of a
resize, up and down, by integer factors and ragged ones, both interpolations, against the reference
(torch's autograd through F.interpolate), into poisoned outputs; NaN and inf as torch's backward
spreads them; the window of candidate outputs covering every reader of each input row; and a
resize's gradient in a compiled graph against torch.autograd in float64."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kcomp.ir.builder import GraphBuilder
from kcomp.kernels.resize_grad import span
from kcomp.passes.autodiff import gradients
from kcomp.runtime.executor import PlanExecutor

from kernel_helpers import (
    assert_compiled_matches_reference, assert_launch_matches_reference, assert_same_nonfinite, kernels_of, with_nonfinite,
)
from tolerances import tolerance

# (the resize's input height, width, its output height, width): integer factors (UpSampling2D's,
# a factor 1 along an axis: torch copies it), ragged enlargements and reductions, one pixel wide.
SIZES = [(5, 7, 10, 14), (5, 7, 15, 7), (3, 9, 24, 9), (9, 4, 3, 17), (7, 2, 21, 5), (5, 1, 40, 3), (11, 10, 4, 6),
         (6, 1, 18, 1)]


def _graph(h, w, oh, ow, interpolation):
    b = GraphBuilder("resize_grad")
    g = b.input((None, oh, ow, 3), "float32", "g")
    return b.finish([b.emit1("resize_grad", [g], height=h, width=w, interpolation=interpolation)])


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("h, w, oh, ow", SIZES)
def test_resize_grad_kernel_matches_the_reference(h, w, oh, ow, interpolation):
    graph = _graph(h, w, oh, ow, interpolation)
    g = torch.randn(2, oh, ow, 3)
    compared = assert_compiled_matches_reference(graph, [g], kind="accumulating")
    (kernel,) = kernels_of(compared.fused)
    assert kernel.attrs["template"] == "resize_grad"
    assert_launch_matches_reference(graph, kernel, [g], kind="accumulating")  # into poisoned outputs


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("h, w, oh, ow", [(5, 7, 10, 14), (3, 9, 24, 9), (9, 4, 3, 17), (7, 2, 21, 5)])
def test_resize_grad_kernel_spreads_nan_and_inf_as_torch(h, w, oh, ow, interpolation):
    """Torch's backward adds every term (weight * g, even at weight 0: 0 * inf is NaN), so a NaN or
    inf gradient reaches exactly the pixels it reaches there."""
    graph = _graph(h, w, oh, ow, interpolation)
    g = with_nonfinite(torch.randn(2, oh, ow, 3))
    g[1, 0, :, 1] = float("inf")  # a row left of the first centre: read at weight 0 by row 1
    compared = assert_compiled_matches_reference(graph, [g], kind="accumulating", float64_reference=True)
    assert not torch.isfinite(compared.want[0]).all()


def _readers(in_size, out_size, bilinear):
    """For each input row, the output rows that read it (numpy, in float32 as torch and the kernels)."""
    scale = np.float32(in_size) / np.float32(out_size)
    o = np.arange(out_size, dtype=np.float32)
    if bilinear:
        real = np.maximum((o + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
        i0 = real.astype(np.int64)
        i1 = np.where((i0 < in_size - 1) & (in_size != out_size), i0 + 1, i0)
        sources = [i0, i1]
    else:
        sources = [np.minimum(np.floor((o + np.float32(0.5)) * scale).astype(np.int64), in_size - 1)]
    return [sorted({k for s in sources for k in np.nonzero(s == h)[0]}) for h in range(in_size)]


def _first_reader(h, scale, bilinear):
    """kernels/resize_grad.py's _first_reader, in float32."""
    h, scale = np.float32(h), np.float32(scale)
    if bilinear:
        return 0 if h <= 1 else max(math.floor((h - np.float32(0.5)) / scale - np.float32(0.5)) - 1, 0)
    return max(math.floor(h / scale - np.float32(0.5)) - 1, 0)


@pytest.mark.parametrize("bilinear", [True, False])
def test_the_candidate_window_covers_every_reader(bilinear):
    """Every output row reading input row h lies in [first, first + span) (the kernel checks each
    candidate exactly, so the window only has to cover them), for many sizes up and down."""
    for in_size in range(1, 40):
        for out_size in sorted({1, 2, 3, in_size, 2 * in_size, 3 * in_size, 7 * in_size + 3, 97, max(1, in_size // 3)}):
            scale = np.float32(in_size) / np.float32(out_size)
            window = span(float(scale), bilinear)
            for h, readers in enumerate(_readers(in_size, out_size, bilinear)):
                first = _first_reader(h, scale, bilinear)
                assert all(first <= o < first + window for o in readers), (in_size, out_size, h, readers, first, window)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_a_resize_gradient_compiled_matches_autograd_in_float64(interpolation):
    """loss = sum(resize(x * x) * c): d loss / dx compiled (resize_grad, then x's factor in a
    pointwise kernel) against torch.autograd through F.interpolate in float64."""
    b = GraphBuilder("grad")
    x = b.input((None, 4, 5, 2), "float32", "x")
    y = b.emit1("resize", [b.emit1("mul", [x, x])], height=12, width=10, interpolation=interpolation)
    c = b.input(y.shape, "float32", "c")
    (dx,) = gradients(b, b.emit1("sum", [b.emit1("mul", [y, c])]), [x])
    graph = b.finish([dx])
    inputs = [torch.randn(3, 4, 5, 2), torch.randn(3, 12, 10, 2)]
    executor = PlanExecutor(graph, "triton-interpret")
    (got,) = executor.run(inputs, {})
    assert "resize_grad" in {k.attrs["template"] for k in kernels_of(executor.plan.graph)}
    x64, c64 = (t.double() for t in inputs)
    x64.requires_grad_(True)
    mode = dict(mode="bilinear", align_corners=False) if interpolation == "bilinear" else dict(mode="nearest-exact")
    y64 = F.interpolate((x64 * x64).permute(0, 3, 1, 2), size=(12, 10), **mode).permute(0, 2, 3, 1)
    (want,) = torch.autograd.grad((y64 * c64).sum(), [x64])
    assert_same_nonfinite(got, want, **tolerance("float32", "accumulating"))
