"""Generator for the matmul template: Dense, its prologue (ops that produced A) and epilogue."""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args
from kcomp.passes.fuse import chain_input


def generate(body) -> Generated:
    nodes = [n for n in body.nodes if n.op != "constant"]
    at = next(i for i, n in enumerate(nodes) if n.op == "matmul")
    anchor, prologue_nodes = nodes[at], nodes[:at]
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # A is what the prologue chain starts from (the anchor's own input when there is no prologue).
    a_value = chain_input(prologue_nodes) if prologue_nodes else anchor.inputs[0]
    a, b = index_of[a_value.id], index_of[anchor.inputs[1].id]
    constants = [n for n in body.nodes if n.op == "constant"]
    prologue, pro_operands = generate_epilogue(body, constants + prologue_nodes, a_value, "prologue", PROLOGUE_PARAMS)
    expression, operands = generate_epilogue(body, constants + nodes[at + 1 :], anchor.outputs[0])
    out_dtype = body.outputs[0].dtype
    launch = f"""    # check: A is (..., K) and read as a row-major (M, K) matrix; B is (K, N).
    a = in{a}.contiguous()
    b = in{b}
    K = a.shape[-1]
    M = a.numel() // K
    N = b.shape[1]
    if b.shape[0] != K:
        raise ValueError(f"{{tuple(a.shape)}} @ {{tuple(b.shape)}}: inner dimensions differ")
{contiguous_operands(pro_operands + operands)}    # allocate
    if out is None:
        out = torch.empty((*a.shape[:-1], N), device=a.device, dtype=torch.{out_dtype})
    # grid
    config = config or candidate_configs(M, N, K, interpret=a.device.type == "cpu", whole_rows={nodes[-1].op in ("softmax", "log_softmax")})[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    matmul_kernel[grid(M, N, config)](
        a, b, out, M, N, K,
        K, 1, b.stride(0), b.stride(1), N, 1,
        {operand_args(pro_operands, tile=True, count=2)},
        {operand_args(operands, tile=True, count=4)},
        PROLOGUE=prologue, HAS_PROLOGUE={bool(prologue_nodes)}, EPILOGUE=epilogue, PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    return Generated("from kcomp.kernels.matmul import candidate_configs, grid, matmul_kernel", prologue + "\n\n" + expression, launch)
