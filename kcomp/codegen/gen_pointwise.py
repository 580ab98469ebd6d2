"""Generator for the pointwise template: a chain of elementwise ops in one pass."""

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import GeneratedKernel


def generate(body) -> GeneratedKernel:
    hook, operands = generate_body(body, list(body.nodes), None, name="body")
    out = body.outputs[0]
    full = any(o.kind == "full" for o in operands)  # else the shape is static (the batch may vary)
    return GeneratedKernel(hook, {
        "body": "body",
        "operands": repr(tuple(operands)),
        "out_dtype": f"torch.{out.dtype}",
        "static_shape": "None" if full else repr(tuple(body.outputs[0].shape)),
    })


GENERATES = {"pointwise": generate}  # template name -> generator (kcomp.codegen.module collects these)
