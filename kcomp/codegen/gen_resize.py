"""Generator for the resize template (kernels/resize.py): which input is the image and the op's
attributes; the template has no fused expression."""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts


def resize_binding(kernel: KernelParts, image: str, note: str) -> GeneratedKernel:
    """The binding of a resize or a resize_grad: its one input (named `image` in the binding), the
    op's attributes, the output dtype; `note` says why there are no hooks."""
    node = kernel.anchor
    index_of = {v.id: i for i, v in enumerate(kernel.body.inputs)}
    attrs = node.attrs
    return GeneratedKernel(f"# {node.op}: no fused expression; {note}.\n", {
        image: repr(index_of[node.inputs[0].id]),
        "height": repr(attrs["height"]),
        "width": repr(attrs["width"]),
        "interpolation": repr(attrs["interpolation"]),
        "out_dtype": f"torch.{kernel.body.outputs[0].dtype}",
    })


def generate(kernel: KernelParts) -> GeneratedKernel:
    return resize_binding(kernel, "x", "the template blends the input pixels it reads")


GENERATES = {"resize": generate}  # template name -> generator (kcomp.codegen.module collects these)
