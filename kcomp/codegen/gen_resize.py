"""Generator for the resize template (kernels/resize.py): which input is the image and the op's
attributes; the template has no fused expression."""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts


def generate(kernel: KernelParts) -> GeneratedKernel:
    resize = kernel.anchor
    index_of = {v.id: i for i, v in enumerate(kernel.body.inputs)}
    attrs = resize.attrs
    return GeneratedKernel("# resize: no fused expression; the template blends the input pixels it reads.\n", {
        "x": repr(index_of[resize.inputs[0].id]),
        "height": repr(attrs["height"]),
        "width": repr(attrs["width"]),
        "interpolation": repr(attrs["interpolation"]),
        "out_dtype": f"torch.{kernel.body.outputs[0].dtype}",
    })


GENERATES = {"resize": generate}  # template name -> generator (kcomp.codegen.module collects these)
