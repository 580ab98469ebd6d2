"""A simplify rule: zeros padded around an image just before a 'valid' convolution, exactly as many
as Keras's 'same' padding puts there, are that convolution with padding='same' (ZeroPadding2D(1)
before a 3x3 Conv2D, a common tutorial pattern). The conv template pads 'same' in its masked loads,
so the pad, a torch op in a plan, goes away; the forward conv and its filter gradient read x
itself. Other amounts (more on one side than 'same' puts there, a strided conv's uneven split)
keep the pad.
"""

from kcomp.ir.graph import Node
from kcomp.ir.ops.conv import same_padding
from kcomp.passes.rewrite import Rewriter

WINDOW = {"conv2d": lambda node: node.inputs[1].shape[:2], "conv2d_backprop_filter": lambda node: node.attrs["kernel_size"]}


def _unpadded(v, rw: Rewriter):
    """(x, {axis: (before, after)}): the value under a chain of pads along axes 1 and 2 (a pad read by
    something else too stays for it)."""
    pads = {}
    while (node := rw.producer_of(v)) is not None and node.op == "pad":
        axis = node.attrs["axis"] % node.inputs[0].rank
        if axis not in (1, 2) or axis in pads:
            break
        pads[axis] = (node.attrs["before"], node.attrs["after"])
        v = node.inputs[0]
    return v, pads


def pad_into_conv(node: Node, rw: Rewriter):
    a = node.attrs
    if a["padding"] != "valid":
        return None
    x, pads = _unpadded(node.inputs[0], rw)
    if not pads:
        return None
    window = WINDOW[node.op](node)
    for axis in (1, 2):
        same = same_padding(x.shape[axis], window[axis - 1], a["strides"][axis - 1], a["dilation"][axis - 1])
        if pads.get(axis, (0, 0)) != same:
            return None
    return rw.emit(node.op, [x, *node.inputs[1:]], **{**a, "padding": "same"})


RULES = [(op, pad_into_conv) for op in WINDOW]
