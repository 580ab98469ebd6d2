"""Generators for the depthwise conv templates (kernels/conv2d_depthwise.py).

conv2d_depthwise: body [constants...] conv2d (groups == input channels), elementwise chain...;
the epilogue is generated from the chain. conv2d_depthwise_grad_input: conv2d_backprop_input
alone. conv2d_depthwise_grad_filter: conv2d_backprop_filter [sum]: the optional sum over axes
(0, 1, 2) of dY is the bias gradient, a second output. Strides, dilation and padding go into the
binding; image sizes are read from the tensors at run time (the batch varies), except the input
gradient's (H, W) and channels, which are the node's.
"""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.gen_conv2d_grad import geometry
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts

NO_HOOK = "# {}: no fused expression; the geometry is in the binding below.\n"


def _inputs(kernel: KernelParts) -> dict[int, int]:
    return {v.id: i for i, v in enumerate(kernel.body.inputs)}


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, conv = kernel.body, kernel.anchor
    assert conv.op == "conv2d" and conv.inputs[1].shape[2] == 1, "the depthwise template computes groups == channels"
    x, w = (_inputs(kernel)[v.id] for v in conv.inputs)
    hook, operands = generate_epilogue(body, list(kernel.constants) + list(kernel.epilogue), conv.outputs[0])
    return GeneratedKernel(hook, {
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "x": repr(x),
        "w": repr(w),
        **geometry(conv),
        "out_dtype": f"torch.{body.outputs[-1].dtype}",
    })


def generate_input(kernel: KernelParts) -> GeneratedKernel:
    conv = kernel.anchor
    assert conv.op == "conv2d_backprop_input" and not (kernel.prologue or kernel.epilogue or kernel.extra)
    dy, w = (_inputs(kernel)[v.id] for v in conv.inputs)
    return GeneratedKernel(NO_HOOK.format("conv2d_depthwise_grad_input"), {
        "dy": repr(dy),
        "w": repr(w),
        "input_size": repr(tuple(conv.attrs["input_size"])),
        "channels": repr(conv.outputs[0].shape[3]),
        **geometry(conv),
        "dx_dtype": f"torch.{conv.outputs[0].dtype}",
    })


def generate_filter(kernel: KernelParts) -> GeneratedKernel:
    conv = kernel.anchor
    assert conv.op == "conv2d_backprop_filter" and not kernel.prologue and all(n.op == "cast" for n in kernel.epilogue)
    column_sum = kernel.extra[0] if kernel.extra else None  # dY's sums: the bias gradient
    x, dy = (_inputs(kernel)[v.id] for v in conv.inputs)
    return GeneratedKernel(NO_HOOK.format("conv2d_depthwise_grad_filter"), {
        "x": repr(x),
        "dy": repr(dy),
        "kernel_size": repr(tuple(conv.attrs["kernel_size"])),
        **geometry(conv),
        # a cast after dW or the sums (mixed precision's back to float32) is the dtype they are stored in
        "dw_dtype": f"torch.{(kernel.epilogue[-1] if kernel.epilogue else conv).outputs[0].dtype}",
        "column_sums_dtype": "None" if column_sum is None else f"torch.{kernel.extra[-1].outputs[0].dtype}",
    })


GENERATES = {  # template name -> generator (kcomp.codegen.module collects these)
    "conv2d_depthwise": generate,
    "conv2d_depthwise_grad_input": generate_input,
    "conv2d_depthwise_grad_filter": generate_filter,
}
