"""Generators for the row templates: softmax / log_softmax and layer_norm (no generated hook).

A row kernel's module holds only its binding: which inputs are which, the op's attributes and
the output dtype.
"""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts

NO_HOOK = "# {name}: no generated hook; the binding's flags are constexpr in the template.\n"


def generate_softmax(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    return GeneratedKernel(NO_HOOK.format(name=node.op), {
        "x": repr(index_of[node.inputs[0].id]),
        "log": repr(node.op == "log_softmax"),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


def generate_layer_norm(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    a = node.attrs
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # The op's inputs: x, then gamma when it scales, then beta when it centers.
    params = iter(node.inputs[1:])
    gamma = index_of[next(params).id] if a["scale"] else None
    beta = index_of[next(params).id] if a["center"] else None
    return GeneratedKernel(NO_HOOK.format(name="layer_norm"), {
        "x": repr(index_of[node.inputs[0].id]),
        "gamma": repr(gamma),
        "beta": repr(beta),
        "epsilon": repr(float(a["epsilon"])),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


GENERATES = {"softmax": generate_softmax, "layer_norm": generate_layer_norm}  # kcomp.codegen.module collects these
