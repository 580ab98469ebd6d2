"""Generator for the pointwise template: a chain of elementwise ops in one pass."""

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts


def generate(kernel: KernelParts) -> GeneratedKernel:
    body = kernel.body
    hook, operands = generate_body(body, list(body.nodes), None, name="body")
    out = body.outputs[0]
    full = next((o.input_index for o in operands if o.kind == "full"), None)  # None: the shape is static
    return GeneratedKernel(hook, {
        "body": "body",
        "operands": repr(tuple(operands)),
        "out_dtype": f"torch.{out.dtype}",
        "shape_from": repr(full),
        "static_shape": repr(tuple(out.shape)) if full is None else "None",
    })


GENERATES = {"pointwise": generate}  # template name -> generator (kcomp.codegen.module collects these)
