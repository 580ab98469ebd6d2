"""Generator for the resize-gradient template (kernels/resize_grad.py): as the resize's (which
input is the gradient, the op's attributes); the template has no fused expression."""

from kcomp.codegen.gen_resize import resize_binding
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts


def generate(kernel: KernelParts) -> GeneratedKernel:
    return resize_binding(kernel, "g", "the template gathers the gradients of the output pixels that read each pixel")


GENERATES = {"resize_grad": generate}  # template name -> generator (kcomp.codegen.module collects these)
