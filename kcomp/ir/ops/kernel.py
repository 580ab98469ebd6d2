"""kernel: one fused kernel, made by the fusion pass.

Its `body` is the subgraph of IR nodes it absorbed (a Graph whose inputs are
the kernel's inputs), and `template` names the kernel template that computes
it (a record in kcomp.kernels; the IR does not know the templates, and code generation refuses a
name none has). `roles` says, node by node of the body, what part of the template computes it
(ROLES below): the fusion pass decided it, so code generation reads it instead of working it
out again. The reference runs the body op by op, so a fused graph stays executable by
the reference executor and every fused kernel can be checked against it.
"""

from dataclasses import dataclass

from kcomp.errors import ShapeError
from kcomp.ir.graph import Graph, Node
from kcomp.ir.interpret import run_graph
from kcomp.ir.opdef import OpDef, attr

ROLES = {
    "constant": "a scalar literal the generated code writes in place",
    "gather": "an embedding or a shift whose output the kernel never stores: the anchor loads its input's rows "
              "through the ids, or its input moved",
    "prologue": "an elementwise op computing the anchor's input as the kernel loads it",
    "anchor": "the op the template is built around (the matmul, the conv, the reduction, ...)",
    "epilogue": "an op applied to the anchor's results before the store (a bias, an activation, a pool)",
    "extra": "an op computing a further output from what the kernel loads anyway (B's column sums, "
             "a bias gradient, a loss's gradient, the accuracy)",
}


@dataclass(frozen=True)
class KernelParts:
    """A kernel node's body split by role, in body order."""

    body: Graph
    anchor: Node
    gather: tuple[Node, ...]
    prologue: tuple[Node, ...]
    epilogue: tuple[Node, ...]
    extra: tuple[Node, ...]
    constants: tuple[Node, ...]


def kernel_parts(node: Node) -> KernelParts:
    body, roles = node.attrs["body"], node.attrs["roles"]
    by_role = {role: tuple(n for n, r in zip(body.nodes, roles) if r == role) for role in ROLES}
    (anchor,) = by_role["anchor"]
    return KernelParts(body, anchor, by_role["gather"], by_role["prologue"], by_role["epilogue"], by_role["extra"],
                       by_role["constant"])


def _kernel_infer(inputs, template, body, roles):
    if len(inputs) != len(body.inputs):
        raise ShapeError(f"kernel[{template}]: {len(inputs)} inputs for a body of {len(body.inputs)}")
    for given, expected in zip(inputs, body.inputs):
        if given != expected.spec:
            raise ShapeError(f"kernel[{template}]: input {given} does not match the body's {expected.spec}")
    if len(roles) != len(body.nodes) or roles.count("anchor") != 1 or not set(roles) <= set(ROLES):
        raise ShapeError(f"kernel[{template}]: roles {roles} do not give each of the body's {len(body.nodes)} nodes "
                         f"one of {tuple(ROLES)}, with one anchor")
    return [v.spec for v in body.outputs]


def _kernel_reference(*tensors, template, body, roles):
    outs = run_graph(body, tensors, {})
    return outs[0] if len(outs) == 1 else tuple(outs)


OPS = [
    OpDef(
        name="kernel",
        doc="One fused kernel: `body` (the absorbed IR nodes, each with its role) computed by the template `template`.",
        num_inputs=(0, None),
        attrs={"template": attr(str), "body": attr(Graph), "roles": attr(tuple, items=str)},
        infer=_kernel_infer,
        reference=_kernel_reference,
        traits={"fused"},
    ),
]
