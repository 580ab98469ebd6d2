"""Generator for the pad-slice template (kernels/pad_slice.py): the chain of pads and slices composed
into one index map, the elementwise ops computing x as its PROLOGUE (or a load of x), the
elementwise ops after the chain as its EPILOGUE."""

from dataclasses import astuple
from itertools import dropwhile

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.ir.types import is_static
from kcomp.kernels.operands import Operand
from kcomp.kernels.pad_slice import MOVES, AxisMap, compose

LOAD_X = """@triton.jit
def prologue(offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7):
    return tl.load(X0 + offs, mask=mask, other=0.0)  # x, as it is
"""


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, constants = kernel.body, list(kernel.constants)
    # The group's epilogue: the pads and slices after the anchor, then the elementwise ops.
    moves = len(kernel.epilogue) - len(list(dropwhile(lambda n: n.op in MOVES, kernel.epilogue)))
    chain, after = [kernel.anchor, *kernel.epilogue[:moves]], list(kernel.epilogue[moves:])
    x = kernel.anchor.inputs[0]
    maps = [AxisMap()] * x.rank
    for node in chain:
        maps = compose(node, maps)
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    if kernel.prologue:
        hooks, operands = generate_body(body, constants + list(kernel.prologue), None, name="prologue")
    else:
        hooks, operands = LOAD_X, [Operand(index_of[x.id], "full", 0)]
    epilogue, epilogue_operands = generate_body(body, constants + after, chain[-1].outputs[0], name="epilogue", flat=True)
    shape_from = next((o.input_index for o in operands if o.kind == "full"), None)
    return GeneratedKernel(hooks + "\n\n" + epilogue, {
        "prologue": "prologue",
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "epilogue_operands": repr(tuple(epilogue_operands)),
        "axes": repr(tuple(astuple(m) for m in maps)),
        "shape_from": repr(shape_from),
        "static_shape": repr(tuple(x.shape)) if shape_from is None and all(is_static(d) for d in x.shape) else "None",
        "out_dtype": f"torch.{(after[-1] if after else chain[-1]).outputs[0].dtype}",
    })


GENERATES = {"pad_slice": generate}  # template name -> generator (kcomp.codegen.module collects these)
