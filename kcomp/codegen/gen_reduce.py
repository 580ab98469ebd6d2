"""Generator for the reduce template: sum / mean / max over consecutive axes.

The reduced axes (from the body's node) split the input's shape into
(outer, R, inner), read at run time (the batch varies); keepdims only shapes
the output. The body is [constants...] prologue chain..., the reduction,
epilogue chain...: the ops before it compute its input as it loads (BODY), the
ops after it transform its results before the store (EPILOGUE).
"""

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args

OPS = ("sum", "mean", "max")


def reduced_axes(axes, rank: int) -> list[int]:
    """The registry's reading of `axes`: None is every axis, () none."""
    if axes is None:
        return list(range(rank))
    return sorted(a % rank for a in axes)


LOAD_BODY = """@triton.jit
def body(offs, mask, C, X0, X1, X2, X3, X4, X5, X6, X7):
    return tl.load(X0 + offs, mask=mask, other=0.0).to(tl.float32)  # the input, as it is
"""


def generate(body) -> Generated:
    nodes = [n for n in body.nodes if n.op != "constant"]
    at = next(i for i, n in enumerate(nodes) if n.op in OPS)  # the reduction; the rest is elementwise
    node, chain, after = nodes[at], nodes[:at], nodes[at + 1:]
    constants = [n for n in body.nodes if n.op == "constant"]
    rank = node.inputs[0].rank
    axes = reduced_axes(node.attrs["axes"], rank)
    if axes and axes != list(range(axes[0], axes[-1] + 1)):
        raise ValueError(f"reduce template: axes {tuple(axes)} are not consecutive")
    first, stop = (axes[0], axes[-1] + 1) if axes else (rank, rank)  # no axes: R = 1
    if node.attrs["keepdims"]:
        out_shape = f"(*x.shape[:{first}], {'1, ' * (stop - first)}*x.shape[{stop}:])"
    else:
        out_shape = f"(*x.shape[:{first}], *x.shape[{stop}:])"
    if chain:
        expression, operands = generate_body(body, constants + chain, None, name="body")
        full = next(o for o in operands if o.kind == "full")  # the chain's start: the input's shape
        check = (f"    # check: the input (computed in the kernel by the ops before the reduction) viewed as\n"
                 f"    # contiguous (outer, R, inner), reducing axes {tuple(axes)} (R); operands line up with it.\n"
                 f"{contiguous_operands(operands)}    x = in{full.input_index}\n")
        args = operand_args(operands, tile=False, count=8, unused="x")
    else:
        expression = LOAD_BODY
        check = f"    # check: the input viewed as contiguous (outer, R, inner), reducing axes {tuple(axes)} (R).\n    x = in0.contiguous()\n"
        args = ", ".join(["x"] * 8)
    # The epilogue starts from the reduction's results; its operands (of the output's shape,
    # broadcast along it, or scalars) are loaded at the same flat output indices.
    epilogue, epilogue_operands = generate_body(body, constants + after, node.outputs[0], name="epilogue", flat=True)
    expression += "\n\n" + epilogue
    check += contiguous_operands(epilogue_operands)
    out_dtype = (after[-1] if after else node).outputs[0].dtype
    launch = f"""{check}    outer = x.shape[:{first}].numel()
    R = x.shape[{first}:{stop}].numel()
    inner = x.shape[{stop}:].numel()
    # allocate: (outer, inner) in memory; keepdims={node.attrs["keepdims"]} only shapes it
    if out is None:
        out = torch.empty({out_shape}, device=x.device, dtype=torch.{out_dtype})
    # grid
    config = config or candidate_configs(outer, R, inner, interpret=x.device.type == "cpu")[0]
    # launch
    reduce_kernel[grid(outer * inner, config)](
        out, R, inner, outer * inner, x.shape[-1] if x.dim() else 1,
        {args},
        out.shape[-1] if out.dim() else 1, {operand_args(epilogue_operands, tile=False, count=4, unused="out")},
        BODY=body, EPILOGUE=epilogue, OP="{node.op}", BLOCK_R=config["BLOCK_R"], BLOCK_OUT=config["BLOCK_OUT"], num_warps=config["num_warps"],
    )
    return out
"""
    imports = "from kcomp.kernels.reduce import candidate_configs, grid, reduce_kernel"
    return Generated(imports, expression, launch)
