"""Generator for the matmul template: Dense or a batched matmul, its prologue (ops that produced A)
and epilogue, and, for a Dense, the embedding whose rows it reads through the ids or the shift it
reads A through (a gather). Whether the kernel is batched is B's rank, which the launch reads from
the tensors it is given (kernels/matmul.py), so the binding is the same for both."""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.matmul import cast_b_node
from kcomp.kernels.operands import chain_input


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, anchor, prologue_nodes, epilogue_nodes = kernel.body, kernel.anchor, list(kernel.prologue), list(kernel.epilogue)
    cast_b = cast_b_node(prologue_nodes, anchor)  # B's cast, done as B loads (CAST_B), not A's prologue
    prologue_nodes = [n for n in prologue_nodes if n is not cast_b]
    column_sum = kernel.extra[0] if kernel.extra else None  # B's column sums: a second output
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # A is what the prologue chain starts from (the anchor's own input when there is no prologue);
    # gathering, that is the embedding's output, and the kernel reads the table through the ids.
    a_value = chain_input(prologue_nodes) if prologue_nodes else anchor.inputs[0]
    gather = kernel.gather[0] if kernel.gather else None
    shift = gather if gather is not None and gather.op == "shift" else None
    ids, table = gather.inputs if gather is not None and shift is None else (None, a_value)
    if shift is not None:  # A is the shift's output: the kernel reads its input moved
        table = shift.inputs[0]
    a, b = index_of[table.id], index_of[(anchor.inputs[1] if cast_b is None else cast_b.inputs[0]).id]
    constants = list(kernel.constants)
    prologue, pro_operands = generate_epilogue(body, constants + prologue_nodes, a_value, "prologue", PROLOGUE_PARAMS)
    expression, operands = generate_epilogue(body, constants + epilogue_nodes, anchor.outputs[0])
    return GeneratedKernel(prologue + "\n\n" + expression, {
        "a": str(a),
        "b": str(b),
        "ids": "None" if ids is None else str(index_of[ids.id]),
        "shift": "()" if shift is None else repr(tuple(shift.attrs[k] for k in ("axis", "period", "by"))),
        "prologue": "prologue",
        "has_prologue": str(bool(prologue_nodes)),
        "prologue_operands": repr(tuple(pro_operands)),
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
        "cast_b": repr("" if cast_b is None else cast_b.outputs[0].dtype),
        # the sums' own dtype, or a cast's after them (mixed precision's float32 bias gradient)
        "column_sums_dtype": "None" if column_sum is None else f"torch.{kernel.extra[-1].outputs[0].dtype}",
        "whole_rows": str(bool(epilogue_nodes) and epilogue_nodes[-1].op in ("softmax", "log_softmax")),
    })


GENERATES = {"matmul": generate}  # template name -> generator (kcomp.codegen.module collects these)
