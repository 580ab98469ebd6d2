"""Generators for the row templates: softmax / log_softmax and layer_norm (no generated hook).

A row kernel's module holds only its binding: the op's attributes and the output dtype.
"""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts

NO_HOOK = "# {name}: no generated hook; the binding's flags are constexpr in the template.\n"


def generate_softmax(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    return GeneratedKernel(NO_HOOK.format(name=node.op), {
        "log": repr(node.op == "log_softmax"),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


def generate_layer_norm(kernel: KernelParts) -> GeneratedKernel:
    body, a = kernel.body, kernel.anchor.attrs
    return GeneratedKernel(NO_HOOK.format(name="layer_norm"), {
        "epsilon": repr(float(a["epsilon"])),
        "scale": repr(bool(a["scale"])),
        "center": repr(bool(a["center"])),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


GENERATES = {"softmax": generate_softmax, "layer_norm": generate_layer_norm}  # kcomp.codegen.module collects these
