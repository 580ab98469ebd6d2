"""2-D convolution and pooling over channels-last (NHWC) images.

Padding follows Keras (TensorFlow): "valid" uses no padding; "same" gives
ceil(size / stride) outputs and pads the total needed as evenly as possible,
the extra pixel going after (bottom/right). Average pooling with "same"
divides by the number of real (unpadded) pixels in each window, as Keras does.
Each op's gradient rule sits after its reference; the backward ops it builds
(conv2d_backprop_input/filter, max_pool2d_grad, avg_pool2d_grad) are in conv_grad.py.
"""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir import saved_forwards
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float, require_rank, require_same_dtype
from kcomp.ir.types import TensorSpec, is_static

PADDINGS = ("valid", "same")


def output_size(size: int, window: int, stride: int, dilation: int, padding: str) -> int:
    effective = dilation * (window - 1) + 1
    if padding == "same":
        return -(-size // stride)
    return (size - effective) // stride + 1


def same_padding(size: int, window: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of Keras's "same" along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (window - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def window_pads(input_size, window, strides, dilation, padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)): the padding Keras puts around an image of input_size (H, W)
    for this window; none for 'valid'."""
    if padding != "same":
        return (0, 0), (0, 0)
    return tuple(same_padding(size, k, s, d) for size, k, s, d in zip(input_size, window, strides, dilation))


def pads_before(H: int, W: int, window, strides, dilation, padding: str) -> tuple[int, int]:
    """(pad_top, pad_left): the padding Keras puts before each axis of an H x W image."""
    (top, _), (left, _) = window_pads((H, W), window, strides, dilation, padding)
    return top, left


def sliding_window(H: int, W: int, window, strides, dilation, padding: str) -> tuple[int, int, int, int]:
    """(OH, OW, pad_top, pad_left) of a window sliding over an H x W image, padded as Keras pads."""
    OH = output_size(H, window[0], strides[0], dilation[0], padding)
    OW = output_size(W, window[1], strides[1], dilation[1], padding)
    return (OH, OW, *pads_before(H, W, window, strides, dilation, padding))


def _spatial_out(x: TensorSpec, window, strides, dilation, padding, what) -> tuple[int, int]:
    h, w = x.shape[1], x.shape[2]
    if not (is_static(h) and is_static(w)):
        raise ShapeError(f"{what} needs known height and width, received input shape {format_shape(x.shape)}.")
    out = tuple(
        output_size(size, k, s, d, padding) for size, k, s, d in zip((h, w), window, strides, dilation)
    )
    if min(out) <= 0:
        raise ShapeError(
            f"{what}: window {tuple(window)} (dilation {tuple(dilation)}) does not fit the {h}x{w} input "
            f"with padding='valid'; use padding='same' or a smaller window."
        )
    return out


def _pad_nchw(x, window, strides, dilation, padding, value=0.0):
    if padding != "same":
        return x
    (hb, ha), (wb, wa) = window_pads(x.shape[2:], window, strides, dilation, padding)
    return F.pad(x, (wb, wa, hb, ha), value=value)


def _check_pair(name, value):
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ShapeError(f"Received: {name}={value}. Expected two positive integers.")


def _conv2d_infer(inputs, strides, padding, dilation, groups):
    x, kernel = inputs
    require_rank(x, 4, "conv2d (input NHWC)")
    require_rank(kernel, 4, "conv2d (kernel kh, kw, in, filters)")
    require_float(x, "conv2d")
    dtype = require_same_dtype(inputs, "conv2d")
    _check_pair("strides", strides)
    _check_pair("dilation", dilation)
    kh, kw, cin, cout = kernel.shape
    if x.shape[3] != cin * groups or cout % groups:
        raise ShapeError(
            f"conv2d: input shape {format_shape(x.shape)} has {x.shape[3]} channels but the kernel "
            f"{format_shape(kernel.shape)} with groups={groups} expects {cin * groups}."
        )
    oh, ow = _spatial_out(x, (kh, kw), strides, dilation, padding, "conv2d")
    return [TensorSpec((x.shape[0], oh, ow, cout), dtype)]


def _conv2d(x, kernel, strides, padding, dilation, groups):
    return conv2d_with_bias(x, kernel, None, strides, padding, dilation, groups)


def conv2d_with_bias(x, kernel, bias, strides, padding, dilation, groups):
    """conv2d, plus `bias` (filters,) where it is not None: the reference executor runs
    bias_add(conv2d(...)) as this one torch call (kcomp.runtime.reference). NHWC x permuted to
    NCHW is a channels-last view: torch's CPU convolution reads it and writes a channels-last
    result, so neither permute copies."""
    xn = _pad_nchw(x.permute(0, 3, 1, 2), kernel.shape[:2], strides, dilation, padding)
    y = F.conv2d(xn, kernel.permute(3, 2, 0, 1), bias, stride=strides, dilation=dilation, groups=groups)
    return y.permute(0, 2, 3, 1)


def _conv2d_vjp(b, node, grads):
    """dx: the transposed convolution of dy; dkernel: dy against the input patches (ops in conv_grad.py)."""
    (dy,) = grads
    x, kernel = node.inputs
    dx = b.emit1("conv2d_backprop_input", [dy, kernel], input_size=x.shape[1:3], **node.attrs)
    dkernel = b.emit1("conv2d_backprop_filter", [x, dy], kernel_size=kernel.shape[:2], **node.attrs)
    return [dx, dkernel]


def _pool_infer(inputs, pool_size, strides, padding):
    x = inputs[0]
    require_float(x, "pooling")
    require_rank(x, 4, "pooling (input NHWC)")
    _check_pair("pool_size", pool_size)
    _check_pair("strides", strides)
    oh, ow = _spatial_out(x, pool_size, strides, (1, 1), padding, "pooling")
    return [TensorSpec((x.shape[0], oh, ow, x.shape[3]), x.dtype)]


def _max_pool2d(x, pool_size, strides, padding):
    """Where the run's max_pool2d_grad follows, the window maxima's indices are kept for it
    (kcomp.ir.saved_forwards): it routes dy with them instead of finding them again."""
    xn = _pad_nchw(x.permute(0, 3, 1, 2), pool_size, strides, (1, 1), padding, value=float("-inf"))
    if not saved_forwards.keeps("max_pool2d"):
        return F.max_pool2d(xn, pool_size, strides).permute(0, 2, 3, 1)
    y, argmax = F.max_pool2d(xn, pool_size, strides, return_indices=True)
    attrs = {"pool_size": pool_size, "strides": strides, "padding": padding}
    saved_forwards.save_tape("max_pool2d", (x,), attrs, (xn,), (argmax,))
    return y.permute(0, 2, 3, 1)


def _max_pool2d_vjp(b, node, grads):
    """Each window's gradient goes to its maximum: the forward's argmax where the same run
    kept it, else found again from x."""
    (dy,) = grads
    return [b.emit1("max_pool2d_grad", [node.inputs[0], dy], **node.attrs)]


def _avg_pool2d(x, pool_size, strides, padding):
    xn = x.permute(0, 3, 1, 2)
    padded = _pad_nchw(xn, pool_size, strides, (1, 1), padding)
    window = pool_size[0] * pool_size[1]
    sums = F.avg_pool2d(padded, pool_size, strides) * window
    ones = _pad_nchw(torch.ones_like(xn[:1, :1]), pool_size, strides, (1, 1), padding)
    counts = F.avg_pool2d(ones, pool_size, strides) * window
    return (sums / counts).permute(0, 2, 3, 1)


def _avg_pool2d_vjp(b, node, grads):
    """Each window's gradient, over its count of real pixels, spread back over the window."""
    (dy,) = grads
    return [b.emit1("avg_pool2d_grad", [dy], input_size=node.inputs[0].shape[1:3], **node.attrs)]


POOL_ATTRS = {
    "pool_size": attr(tuple, items=int),
    "strides": attr(tuple, items=int),
    "padding": attr(str, "valid", PADDINGS),
}

OPS = [
    OpDef(
        name="conv2d",
        doc="Cross-correlation of NHWC x with a (kh, kw, in/groups, filters) kernel; no bias.",
        num_inputs=(2, 2),
        attrs={
            "strides": attr(tuple, (1, 1), items=int),
            "padding": attr(str, "valid", PADDINGS),
            "dilation": attr(tuple, (1, 1), items=int),
            "groups": attr(int, 1),
        },
        infer=_conv2d_infer,
        reference=_conv2d,
        vjp=_conv2d_vjp,
        traits={"linear", "conv"},
    ),
    OpDef(
        name="max_pool2d",
        doc="Maximum over pool_size windows of an NHWC image ('same' pads with -inf).",
        num_inputs=(1, 1),
        attrs=POOL_ATTRS,
        infer=_pool_infer,
        reference=_max_pool2d,
        vjp=_max_pool2d_vjp,
        traits={"pool"},
    ),
    OpDef(
        name="avg_pool2d",
        doc="Mean over pool_size windows of an NHWC image ('same' counts only real pixels).",
        num_inputs=(1, 1),
        attrs=POOL_ATTRS,
        infer=_pool_infer,
        reference=_avg_pool2d,
        vjp=_avg_pool2d_vjp,
        traits={"pool"},
    ),
]
