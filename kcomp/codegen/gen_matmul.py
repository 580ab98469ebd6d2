"""Generator for the matmul template: Dense and its epilogue."""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args


def generate(body) -> Generated:
    nodes = [n for n in body.nodes if n.op != "constant"]
    anchor = nodes[0]
    assert anchor.op == "matmul"
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    a, b = (index_of[v.id] for v in anchor.inputs)
    constants = [n for n in body.nodes if n.op == "constant"]
    expression, operands = generate_epilogue(body, constants + nodes[1:], anchor.outputs[0])
    out_dtype = body.outputs[0].dtype
    launch = f"""    # check: A is (..., K) and read as a row-major (M, K) matrix; B is (K, N).
    a = in{a}.contiguous()
    b = in{b}
    K = a.shape[-1]
    M = a.numel() // K
    N = b.shape[1]
    if b.shape[0] != K:
        raise ValueError(f"{{tuple(a.shape)}} @ {{tuple(b.shape)}}: inner dimensions differ")
{contiguous_operands(operands)}    # allocate
    if out is None:
        out = torch.empty((*a.shape[:-1], N), device=a.device, dtype=torch.{out_dtype})
    # grid
    config = config or candidate_configs(M, N, K, interpret=a.device.type == "cpu")[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    matmul_kernel[grid(M, N, config)](
        a, b, out, M, N, K,
        K, 1, b.stride(0), b.stride(1), N, 1,
        {operand_args(operands, tile=True, count=4)},
        EPILOGUE=epilogue, PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    return Generated("from kcomp.kernels.matmul import candidate_configs, grid, matmul_kernel", expression, launch)
