"""Generators for the conv2d backward templates (kernels/conv2d_grad.py).

conv2d_grad_filter: body [constants...] [prologue chain...] conv2d_backprop_filter [sum].
The prologue chain is the elementwise ops that produced dY (applied to each dY
tile as it loads); the optional sum over axes (0, 1, 2) of dY is the bias
gradient, a second output. conv2d_grad_input: body [constants...] conv2d_backprop_input, elementwise
chain... (a Conv2DTranspose's bias and activation, generated as the epilogue).

Strides, dilation and padding come from the node and go into the binding; image
sizes are read from the tensors at run time (the batch varies), except the input
gradient's (H, W), which is the node's input_size.
"""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.operands import chain_input


def geometry(conv) -> dict[str, str]:
    """The forward's strides, dilation and padding: the binding fields the conv gradient templates
    (and the depthwise ones, gen_conv2d_depthwise.py) share."""
    strides, dilation = tuple(conv.attrs["strides"]), tuple(conv.attrs["dilation"])
    return {"strides": repr(strides), "dilation": repr(dilation), "padding": repr(conv.attrs["padding"])}


def generate_filter(kernel: KernelParts) -> GeneratedKernel:
    body, conv, constants, prologue_nodes = kernel.body, kernel.anchor, list(kernel.constants), list(kernel.prologue)
    assert conv.op == "conv2d_backprop_filter" and conv.attrs["groups"] == 1
    column_sum = kernel.extra[0] if kernel.extra else None  # dY's sums: the bias gradient
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # dY as loaded: what the prologue chain starts from, or the node's own input.
    dy_value = chain_input(prologue_nodes) if prologue_nodes else conv.inputs[1]
    prologue, prologue_operands = generate_epilogue(body, constants + prologue_nodes, dy_value, "prologue", PROLOGUE_PARAMS)
    return GeneratedKernel(prologue, {
        "x": repr(index_of[conv.inputs[0].id]),
        "dy": repr(index_of[dy_value.id]),
        "kernel_size": repr(tuple(conv.attrs["kernel_size"])),
        **geometry(conv),
        "prologue": "prologue",
        "has_prologue": repr(bool(prologue_nodes)),
        "prologue_operands": repr(tuple(prologue_operands)),
        # a cast after dW or the sums (mixed precision's back to float32) is the dtype they are stored in
        "dw_dtype": f"torch.{(kernel.epilogue[-1] if kernel.epilogue else conv).outputs[0].dtype}",
        "column_sums_dtype": "None" if column_sum is None else f"torch.{kernel.extra[-1].outputs[0].dtype}",
    })


def generate_input(kernel: KernelParts) -> GeneratedKernel:
    """The input gradient, with the elementwise chain after it as its epilogue (a Conv2DTranspose's
    bias and activation; none in a conv's backward pass)."""
    body, conv = kernel.body, kernel.anchor
    assert conv.op == "conv2d_backprop_input" and conv.attrs["groups"] == 1 and not (kernel.prologue or kernel.extra)
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    dy, w = (index_of[v.id] for v in conv.inputs)
    hook, operands = generate_epilogue(body, list(kernel.constants) + list(kernel.epilogue), conv.outputs[0])
    return GeneratedKernel(hook, {
        "dy": repr(dy),
        "w": repr(w),
        "input_size": repr(tuple(conv.attrs["input_size"])),
        **geometry(conv),
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "dx_dtype": f"torch.{body.outputs[-1].dtype}",
    })


GENERATES = {"conv2d_grad_filter": generate_filter, "conv2d_grad_input": generate_input}  # kcomp.codegen.module collects these
