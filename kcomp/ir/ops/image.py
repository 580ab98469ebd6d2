"""Image preprocessing ops: resize (Keras's Resizing, CenterCrop's smart resize), its gradient,
and constant_array (a per-channel Rescaling's scale and offset).

resize follows keras.ops.image.resize on the torch backend (antialias=False), images NHWC:
torch's interpolate with mode "bilinear" (align_corners=False) or "nearest-exact" (Keras's
"nearest" on torch). Both read each output pixel from input pixels chosen by index arithmetic
alone, so the op is linear in x and its gradient (resize_grad) is the adjoint: every output
pixel's gradient added back into the input pixels it read, with the same weights.
"""

import torch
import torch.nn.functional as F

from kcomp.errors import ShapeError, format_shape
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.common import require_float, require_rank
from kcomp.ir.types import TORCH_DTYPES, TensorSpec, check_dtype, is_static

# Keras's interpolation name -> torch's interpolate mode (keras/src/backend/torch/image.py).
INTERPOLATIONS = {"bilinear": "bilinear", "nearest": "nearest-exact"}


def _resize_infer(inputs, height, width, interpolation):
    (x,) = inputs
    require_rank(x, 4, "resize")
    require_float(x, "resize")
    if not all(is_static(d) for d in x.shape[1:3]):
        raise ShapeError(f"resize needs the image's height and width known at build time, received {format_shape(x.shape)}.")
    if height < 1 or width < 1:
        raise ShapeError(f"Received: height={height}, width={width}. Expected sizes >= 1.")
    return [TensorSpec((x.shape[0], height, width, x.shape[3]), x.dtype)]


def _interpolate(x_nchw, size, interpolation):
    align = False if interpolation == "bilinear" else None
    return F.interpolate(x_nchw, size=size, mode=INTERPOLATIONS[interpolation], align_corners=align, antialias=False)


def _resize(x, height, width, interpolation):
    y = _interpolate(x.permute(0, 3, 1, 2), (height, width), interpolation)
    return y.permute(0, 2, 3, 1).contiguous()


def _resize_vjp(b, node, grads):
    (g,) = grads
    (x,) = node.inputs
    return [b.emit1("resize_grad", [g], height=x.shape[1], width=x.shape[2], interpolation=node.attrs["interpolation"])]


def _resize_grad_infer(inputs, height, width, interpolation):
    (g,) = inputs
    require_rank(g, 4, "resize_grad")
    require_float(g, "resize_grad")
    return [TensorSpec((g.shape[0], height, width, g.shape[3]), g.dtype)]


def _resize_grad(g, height, width, interpolation):
    # The adjoint of resize, as torch's autograd computes it (resize is linear: x's values are unused).
    x = torch.zeros((g.shape[0], height, width, g.shape[3]), dtype=g.dtype, device=g.device, requires_grad=True)
    with torch.enable_grad():
        y = _resize(x, g.shape[1], g.shape[2], interpolation)
        (dx,) = torch.autograd.grad(y, x, g, create_graph=g.requires_grad)  # differentiable in g (a VJP check's)
    return dx.contiguous()


def _resize_grad_vjp(b, node, grads):
    (gg,) = grads
    g = node.inputs[0]
    return [b.emit1("resize", [gg], height=g.shape[1], width=g.shape[2], interpolation=node.attrs["interpolation"])]


def _constant_array_infer(inputs, values, dtype):
    if not values:
        raise ShapeError("constant_array needs at least one value.")
    return [TensorSpec((len(values),), check_dtype(dtype))]


def _constant_array(values, dtype):
    return torch.tensor(values, dtype=TORCH_DTYPES[dtype])


SIZE_ATTRS = {
    "height": attr(int, doc="the output's height"),
    "width": attr(int, doc="the output's width"),
    "interpolation": attr(str, "bilinear", tuple(INTERPOLATIONS)),
}

OPS = [
    OpDef(
        name="resize",
        doc="NHWC images resized to (height, width) as keras.ops.image.resize on torch (antialias=False).",
        num_inputs=(1, 1),
        attrs=SIZE_ATTRS,
        infer=_resize_infer,
        reference=_resize,
        traits={"gather"},
        vjp=_resize_vjp,
    ),
    OpDef(
        name="resize_grad",
        doc="The gradient of resize: g of the resized images added back into the (height, width) input pixels it read.",
        num_inputs=(1, 1),
        attrs={**SIZE_ATTRS, "height": attr(int, doc="the resize's input height"), "width": attr(int, doc="the resize's input width")},
        infer=_resize_grad_infer,
        reference=_resize_grad,
        traits={"gather"},
        vjp=_resize_grad_vjp,
    ),
    OpDef(
        name="constant_array",
        doc="A constant vector (a per-channel Rescaling's scale or offset): computed once, read as a per-channel operand.",
        num_inputs=(0, 0),
        attrs={"values": attr(tuple, items=(int, float)), "dtype": attr(str, "float32")},
        infer=_constant_array_infer,
        reference=_constant_array,
        traits={"constant"},
    ),
]
