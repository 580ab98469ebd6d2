"""kernel: one fused kernel, made by the fusion pass.

Its `body` is the subgraph of IR nodes it absorbed (a Graph whose inputs are
the kernel's inputs), and `template` names the kernel template that computes
it (a record in kcomp.kernels; the IR does not know the templates, and code generation refuses a
name none has). The reference runs the body op by op, so a fused graph stays executable by
the reference executor and every fused kernel can be checked against it.
"""

from kcomp.errors import ShapeError
from kcomp.ir.graph import Graph
from kcomp.ir.interpret import run_graph
from kcomp.ir.opdef import OpDef, attr


def _kernel_infer(inputs, template, body):
    if len(inputs) != len(body.inputs):
        raise ShapeError(f"kernel[{template}]: {len(inputs)} inputs for a body of {len(body.inputs)}")
    for given, expected in zip(inputs, body.inputs):
        if given != expected.spec:
            raise ShapeError(f"kernel[{template}]: input {given} does not match the body's {expected.spec}")
    return [v.spec for v in body.outputs]


def _kernel_reference(*tensors, template, body):
    outs = run_graph(body, tensors, {})
    return outs[0] if len(outs) == 1 else tuple(outs)


OPS = [
    OpDef(
        name="kernel",
        doc="One fused kernel: `body` (the absorbed IR nodes) computed by the template `template`.",
        num_inputs=(0, None),
        attrs={"template": attr(str), "body": attr(Graph)},
        infer=_kernel_infer,
        reference=_kernel_reference,
        traits={"fused"},
    ),
]
