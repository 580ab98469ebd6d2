"""Generator for the reduce template: sum / mean / max over consecutive axes.

The reduced axes (from the body's node) split the input's shape into
(outer, R, inner), read at run time (the batch varies); keepdims only shapes
the output. The body is [constants...] prologue chain..., the reduction,
epilogue chain...: the ops before it compute its input as it loads (BODY), the
ops after it transform its results before the store (EPILOGUE). The binding
carries the axes, keepdims and each hook's operands to the template's launch.
"""

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.operands import Operand
from kcomp.kernels.reduce import reduced_axes


LOAD_BODY = """@triton.jit
def body(offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7):
    return tl.load(X0 + offs, mask=mask, other=0.0).to(tl.float32)  # the input, as it is
"""


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, node, constants = kernel.body, kernel.anchor, list(kernel.constants)
    chain, after = list(kernel.prologue), list(kernel.epilogue)
    axes = reduced_axes(node.attrs["axes"], node.inputs[0].rank)  # raises unless consecutive
    if chain:
        hooks, operands = generate_body(body, constants + chain, None, name="body")
    else:  # BODY loads the reduction's input, as X0
        index = next(i for i, v in enumerate(body.inputs) if v.id == node.inputs[0].id)
        hooks, operands = LOAD_BODY, [Operand(index, "full", 0)]
    # The epilogue starts from the reduction's results; its operands (of the output's shape,
    # broadcast along it, or scalars) are loaded at the same flat output indices.
    epilogue, epilogue_operands = generate_body(body, constants + after, node.outputs[0], name="epilogue", flat=True)
    return GeneratedKernel(hooks + "\n\n" + epilogue, {
        "body": "body",
        "epilogue": "epilogue",
        "op": repr(node.op),
        "axes": repr(tuple(axes)),
        "keepdims": repr(bool(node.attrs["keepdims"])),
        "operands": repr(tuple(operands)),
        "epilogue_operands": repr(tuple(epilogue_operands)),
        "out_dtype": f"torch.{(after[-1] if after else node).outputs[0].dtype}",
    })


GENERATES = {"reduce": generate}  # template name -> generator (kcomp.codegen.module collects these)
