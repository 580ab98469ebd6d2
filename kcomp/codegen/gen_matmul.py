"""Generator for the matmul template: Dense, its prologue (ops that produced A) and epilogue."""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args
from kcomp.passes.fuse import chain_input


def generate(body) -> Generated:
    nodes = [n for n in body.nodes if n.op != "constant"]
    column_sum = next((n for n in nodes if n.op == "sum"), None)  # B's column sums: a second output
    nodes = [n for n in nodes if n is not column_sum]
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
    if column_sum is None:
        allocate = f"torch.empty((*a.shape[:-1], N), device=a.device, dtype=torch.{out_dtype})"
        unpack = "c, bsum = out, out  # no column sums: BSUM is unused"
    else:
        allocate = (f"(torch.empty((*a.shape[:-1], N), device=a.device, dtype=torch.{out_dtype}), "
                    f"torch.empty((N,), device=a.device, dtype=torch.{column_sum.outputs[0].dtype}))")
        unpack = "c, bsum = out  # C and B's column sums (the bias gradient)"
    launch = f"""    # check: A is (..., K), read as an (M, K) matrix through its strides when 2-D (a transposed
    # view needs no copy), else made contiguous; B is (K, N), read through its strides.
    a = in{a} if in{a}.dim() == 2 else in{a}.contiguous()
    b = in{b}
    K = a.shape[-1]
    M = a.numel() // K
    N = b.shape[1]
    if b.shape[0] != K:
        raise ValueError(f"{{tuple(a.shape)}} @ {{tuple(b.shape)}}: inner dimensions differ")
{contiguous_operands(pro_operands + operands)}    # allocate
    if out is None:
        out = {allocate}
    {unpack}
    # grid
    config = config or candidate_configs(M, N, K, interpret=a.device.type == "cpu", whole_rows={nodes[-1].op in ("softmax", "log_softmax")})[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    matmul_kernel[grid(M, N, config)](
        a, b, c, bsum, M, N, K,
        a.stride(-2) if a.dim() == 2 else K, a.stride(-1), b.stride(0), b.stride(1), N, 1,
        {operand_args(pro_operands, tile=True, count=2, unused="c")},
        {operand_args(operands, tile=True, count=4, unused="c")},
        PROLOGUE=prologue, HAS_PROLOGUE={bool(prologue_nodes)}, EPILOGUE=epilogue, HAS_BSUM={column_sum is not None}, PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    return Generated("from kcomp.kernels.matmul import candidate_configs, grid, matmul_kernel", prologue + "\n\n" + expression, launch)
