"""Backward ops of convolution and pooling: the nodes the VJP rules in conv.py build.

Every op here reads the batch size from a tensor input (the symbolic batch "N" is
known only at run time); the other sizes it needs (an image's height and width)
are static and travel as attributes.
"""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir import saved_forwards
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float, require_rank, require_same_dtype
from kcomp.ir.ops.conv import OPS as CONV_OPS
from kcomp.ir.ops.conv import POOL_ATTRS, output_size, window_pads
from kcomp.ir.types import TensorSpec

# ---------------------------------------------------------------- shared geometry


def _crop_to_input(padded_grad, input_size, pads):
    """NCHW gradient over the padded image -> gradient over the real pixels.

    F.pad with negative amounts crops; positive amounts add the zero rows/columns
    of the padded image that no window reached (floor division of the output size).
    """
    (top, _), (left, _) = pads
    h, w = input_size
    ph, pw = padded_grad.shape[2:]
    return F.pad(padded_grad, (-left, left + w - pw, -top, top + h - ph))


def _check_grad_geometry(dy, input_size, window, strides, dilation, padding, what):
    """dy must have the forward op's output height and width for this input size."""
    require_rank(dy, 4, f"{what} (gradient NHWC)")
    if len(input_size) != 2 or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ShapeError(f"Received: input_size={input_size}. Expected two positive integers.")
    for name, pair in (("strides", strides), ("dilation", dilation), ("window", window)):
        if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
            raise ShapeError(f"Received: {name}={pair}. Expected two positive integers.")
    want = tuple(output_size(n, k, s, d, padding) for n, k, s, d in zip(input_size, window, strides, dilation))
    if min(want) <= 0 or tuple(dy.shape[1:3]) != want:
        raise ShapeError(
            f"{what}: gradient of shape {format_shape(dy.shape)} does not fit a {input_size[0]}x{input_size[1]} "
            f"input with window {tuple(window)}, strides {tuple(strides)}, dilation {tuple(dilation)}, "
            f"padding={padding!r}; expected height and width {want}."
        )


# The backward ops take their forward op's attributes (and defaults) unchanged.
CONV_ATTRS = next(op for op in CONV_OPS if op.name == "conv2d").attrs

# ---------------------------------------------------------------- conv2d


def _backprop_input_infer(inputs, input_size, strides, padding, dilation, groups):
    dy, kernel = inputs
    require_float(dy, "conv2d_backprop_input")
    dtype = require_same_dtype(inputs, "conv2d_backprop_input")
    require_rank(kernel, 4, "conv2d_backprop_input (kernel kh, kw, in, filters)")
    kh, kw, cin, cout = kernel.shape
    _check_grad_geometry(dy, input_size, (kh, kw), strides, dilation, padding, "conv2d_backprop_input")
    if dy.shape[3] != cout or groups <= 0 or cout % groups:
        raise ShapeError(
            f"conv2d_backprop_input: gradient {format_shape(dy.shape)} and kernel {format_shape(kernel.shape)} "
            f"with groups={groups} disagree on the filters."
        )
    return [TensorSpec((dy.shape[0], *input_size, cin * groups), dtype)]


def _conv2d_backprop_input(dy, kernel, input_size, strides, padding, dilation, groups):
    """The transposed convolution of dy, cropped to the unpadded input."""
    kh, kw = kernel.shape[:2]
    dx = F.conv_transpose2d(
        dy.permute(0, 3, 1, 2), kernel.permute(3, 2, 0, 1), stride=strides, dilation=dilation, groups=groups
    )
    pads = window_pads(input_size, (kh, kw), strides, dilation, padding)
    return _crop_to_input(dx, input_size, pads).permute(0, 2, 3, 1).contiguous()


def _backprop_input_vjp(b, node, grads):
    """The op is linear in each input: dy's gradient is the conv2d of g (the input-sized gradient) with
    the same kernel and geometry; the kernel's is the filter gradient of a conv whose input is g and
    whose output gradient is dy. (Conv2DTranspose's gradients: its forward is this op.)"""
    (g,) = grads
    dy, kernel = node.inputs
    geometry = {k: v for k, v in node.attrs.items() if k != "input_size"}
    ddy = b.emit1("conv2d", [g, kernel], **geometry)
    dkernel = b.emit1("conv2d_backprop_filter", [g, dy], kernel_size=kernel.shape[:2], **geometry)
    return [ddy, dkernel]


def _backprop_filter_infer(inputs, kernel_size, strides, padding, dilation, groups):
    x, dy = inputs
    require_rank(x, 4, "conv2d_backprop_filter (input NHWC)")
    require_float(x, "conv2d_backprop_filter")
    dtype = require_same_dtype(inputs, "conv2d_backprop_filter")
    _check_grad_geometry(dy, x.shape[1:3], kernel_size, strides, dilation, padding, "conv2d_backprop_filter")
    cin, cout = x.shape[3], dy.shape[3]
    if groups <= 0 or cin % groups or cout % groups or dy.shape[0] != x.shape[0]:
        raise ShapeError(
            f"conv2d_backprop_filter: input {format_shape(x.shape)} and gradient {format_shape(dy.shape)} "
            f"do not fit groups={groups}."
        )
    return [TensorSpec((*kernel_size, cin // groups, cout), dtype)]


def _conv2d_backprop_filter(x, dy, kernel_size, strides, padding, dilation, groups):
    """dW = sum over batch and output pixels of dy times the input patch each output saw: torch's
    own convolution backward on the explicitly padded input (Keras's 'same' pads can differ
    between top and bottom, which torch's symmetric padding argument cannot say)."""
    kh, kw = kernel_size
    (top, bottom), (left, right) = window_pads(x.shape[1:3], kernel_size, strides, dilation, padding)
    xn = F.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom))
    cout = dy.shape[3]
    dw = torch.nn.grad.conv2d_weight(
        xn, (cout, xn.shape[1] // groups, kh, kw), dy.permute(0, 3, 1, 2), stride=strides, dilation=dilation, groups=groups
    )
    return dw.permute(2, 3, 1, 0).contiguous()


def conv2d_backprop_both(dy, kernel, x, strides, padding, dilation, groups):
    """(conv2d_backprop_input(dy, kernel), conv2d_backprop_filter(x, dy)) from one call of torch's
    convolution backward, as PyTorch's own conv backward computes them: the reference executor runs
    this where a graph needs both gradients of one conv (kcomp.runtime.reference). NHWC x and dy
    permuted to NCHW are channels-last views, which torch's CPU kernels take without a copy. Keras's
    'same' padding goes to torch's padding argument where it is symmetric; otherwise x is padded
    explicitly and dx cropped back, as the two ops do."""
    pads = window_pads(x.shape[1:3], kernel.shape[:2], strides, dilation, padding)
    (top, bottom), (left, right) = pads
    xn = x.permute(0, 3, 1, 2)
    symmetric = top == bottom and left == right
    if not symmetric:
        xn = F.pad(xn, (left, right, top, bottom))
    dx, dw, _ = torch.ops.aten.convolution_backward(
        dy.permute(0, 3, 1, 2), xn, kernel.permute(3, 2, 0, 1), None, list(strides),
        [top, left] if symmetric else [0, 0], list(dilation), False, [0, 0], groups, [True, True, False],
    )
    if not symmetric:
        dx = _crop_to_input(dx, x.shape[1:3], pads)
    return dx.permute(0, 2, 3, 1).contiguous(), dw.permute(2, 3, 1, 0).contiguous()


# ---------------------------------------------------------------- pooling


def _max_pool_grad_infer(inputs, pool_size, strides, padding):
    x, dy = inputs
    require_rank(x, 4, "max_pool2d_grad (input NHWC)")
    require_float(x, "max_pool2d_grad")
    require_same_dtype(inputs, "max_pool2d_grad")
    _check_grad_geometry(dy, x.shape[1:3], pool_size, strides, (1, 1), padding, "max_pool2d_grad")
    if dy.shape[0] != x.shape[0] or dy.shape[3] != x.shape[3]:
        raise ShapeError(
            f"max_pool2d_grad: gradient {format_shape(dy.shape)} does not fit input {format_shape(x.shape)}."
        )
    return [x]


def _max_pool2d_grad(x, dy, pool_size, strides, padding):
    """Each window's gradient goes to its maximum (the first one in row-major order, as torch picks)."""
    pads = window_pads(x.shape[1:3], pool_size, strides, (1, 1), padding)
    (top, bottom), (left, right) = pads
    padded = any((top, bottom, left, right))
    tape = saved_forwards.take_tape("max_pool2d", (x,), {"pool_size": pool_size, "strides": strides, "padding": padding})
    if tape is not None:  # the forward of this run on this very x kept its padded input and argmax
        (xn,), (argmax,) = tape
    else:
        xn = x.permute(0, 3, 1, 2)  # NCHW view of NHWC memory (channels-last strides): no copy
        if padded:
            xn = F.pad(xn, (left, right, top, bottom), value=float("-inf"))
        _, argmax = F.max_pool2d(xn, pool_size, strides, return_indices=True)  # flat indices into the padded image
    # torch's own backward routes each window's gradient to its recorded argmax (adding where
    # windows overlap), into the padded image; the padding is then cropped off.
    routed = torch.ops.aten.max_pool2d_with_indices_backward(
        dy.permute(0, 3, 1, 2), xn, list(pool_size), list(strides), [0, 0], [1, 1], False, argmax
    )
    dx = _crop_to_input(routed, x.shape[1:3], pads) if padded else routed
    return dx.permute(0, 2, 3, 1).contiguous()


def _avg_pool_grad_infer(inputs, input_size, pool_size, strides, padding):
    (dy,) = inputs
    require_float(dy, "avg_pool2d_grad")
    _check_grad_geometry(dy, input_size, pool_size, strides, (1, 1), padding, "avg_pool2d_grad")
    return [TensorSpec((dy.shape[0], *input_size, dy.shape[3]), dy.dtype)]


def _avg_pool2d_grad(dy, input_size, pool_size, strides, padding):
    """Each window's gradient, divided by its count of real pixels, spread over the window."""
    pads = window_pads(input_size, pool_size, strides, (1, 1), padding)
    (top, bottom), (left, right) = pads
    padded_size = (input_size[0] + top + bottom, input_size[1] + left + right)
    window = pool_size[0] * pool_size[1]
    ones = F.pad(dy.new_ones(1, 1, *input_size), (left, right, top, bottom))
    counts = F.avg_pool2d(ones, pool_size, strides) * window  # real pixels per window, (1, 1, OH, OW)
    n, oh, ow, c = dy.shape
    share = (dy.permute(0, 3, 1, 2) / counts).reshape(n, c, 1, oh * ow)
    columns = share.expand(n, c, window, oh * ow).reshape(n, c * window, oh * ow)
    dx = F.fold(columns, padded_size, pool_size, stride=strides)
    return _crop_to_input(dx, input_size, pads).permute(0, 2, 3, 1).contiguous()


OPS = [
    OpDef(
        name="conv2d_backprop_input",
        doc="Gradient of conv2d with respect to its NHWC input: the transposed convolution of dy "
        "(N, OH, OW, filters) with the (kh, kw, in/groups, filters) kernel, cropped to input_size (H, W).",
        num_inputs=(2, 2),
        attrs={"input_size": attr(tuple, items=int), **CONV_ATTRS},
        infer=_backprop_input_infer,
        reference=_conv2d_backprop_input,
        vjp=_backprop_input_vjp,
        traits={"linear", "conv"},
    ),
    OpDef(
        name="conv2d_backprop_filter",
        doc="Gradient of conv2d with respect to its kernel: for inputs x (N, H, W, in) and dy "
        "(N, OH, OW, filters), a (kh, kw, in/groups, filters) sum over the batch and output pixels.",
        num_inputs=(2, 2),
        attrs={"kernel_size": attr(tuple, items=int), **CONV_ATTRS},
        infer=_backprop_filter_infer,
        reference=_conv2d_backprop_filter,
        traits={"linear", "conv"},
    ),
    OpDef(
        name="max_pool2d_grad",
        doc="Gradient of max_pool2d: inputs x and dy; each window's gradient is added at the window's "
        "maximum of x (on ties the first in row-major order, as torch).",
        num_inputs=(2, 2),
        attrs=POOL_ATTRS,
        infer=_max_pool_grad_infer,
        reference=_max_pool2d_grad,
        traits={"pool"},
    ),
    OpDef(
        name="avg_pool2d_grad",
        doc="Gradient of avg_pool2d: dy divided by each window's count of real pixels, spread back over "
        "the window into an (N, H, W, C) image of input_size (H, W).",
        num_inputs=(1, 1),
        attrs={"input_size": attr(tuple, items=int), **POOL_ATTRS},
        infer=_avg_pool_grad_infer,
        reference=_avg_pool2d_grad,
        traits={"pool"},
    ),
]
