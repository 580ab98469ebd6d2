"""Generator for the pointwise template: a chain of elementwise ops in one pass."""

from kcomp.codegen.epilogue import generate as generate_body
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args


def generate(body) -> Generated:
    expression, operands = generate_body(body, list(body.nodes), None, name="body")
    out = body.outputs[0]
    launch = f"""    # check: every operand lines up with the output (full, last-axis vector or scalar).
{contiguous_operands(operands)}    shape = {_shape_expr(body, operands)}
    # allocate
    if out is None:
        out = torch.empty(shape, device=in{operands[0].input_index}.device, dtype=torch.{out.dtype})
    numel = out.numel()
    # grid
    config = config or candidate_configs(numel, interpret=out.device.type == "cpu")[0]
    # launch
    pointwise_kernel[grid(numel, config)](
        out, numel, shape[-1] if len(shape) else 1,
        {operand_args(operands, tile=False, count=8)},
        BODY=body, BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    return Generated("from kcomp.kernels.pointwise import candidate_configs, grid, pointwise_kernel", expression, launch)


def _shape_expr(body, operands) -> str:
    """The output shape at run time, from an operand of the output's full shape (the batch may vary)."""
    full = [o for o in operands if o.kind == "full"]
    if full:
        return f"tuple(in{full[0].input_index}.shape)"
    return repr(tuple(body.outputs[0].shape))  # no full operand: the shape is static
