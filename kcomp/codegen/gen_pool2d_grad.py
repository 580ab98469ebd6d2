"""Generator for the pool2d_grad template: the gradient of a max or average pool.

The body is [constants...] pool grad, elementwise chain...: the pool-grad node
fixes the pool (window, strides, padding); image sizes are read at run time
from the tensors. max_pool2d_grad takes (x, dy) and recomputes each window's
maximum from x; avg_pool2d_grad takes only dy, its image size (H, W) is the
node's input_size. The chain (in a training step, relu's gradient mask
dx * greater(h, 0)) is the epilogue, applied before the store.
"""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args

POOLS = {"max_pool2d_grad": "max", "avg_pool2d_grad": "avg"}


def _check(pool, kind: str, geometry: str, index_of: dict[int, int]) -> str:
    """The wrapper's check step: name the tensors and their (N, H, W, C) / (N, OH, OW, C) sizes."""
    if kind == "max":
        x, dy = (index_of[v.id] for v in pool.inputs)
        return f"""    # check: x is the pool's NHWC input (N, H, W, C), dy its gradient (N, OH, OW, C); {geometry}.
    x = in{x}.contiguous()
    dy = in{dy}.contiguous()
    N, H, W, C = x.shape
    OH, OW = dy.shape[1], dy.shape[2]
"""
    (dy,) = (index_of[v.id] for v in pool.inputs)
    return f"""    # check: dy is the pool's gradient (N, OH, OW, C) of an (H, W) image; {geometry}.
    dy = in{dy}.contiguous()
    x = dy  # the average needs no input; the template's X argument goes unread
    N, OH, OW, C = dy.shape
    H, W = {pool.attrs["input_size"][0]}, {pool.attrs["input_size"][1]}
"""


def generate(body) -> Generated:
    pool, *chain = [n for n in body.nodes if n.op != "constant"]
    constants = [n for n in body.nodes if n.op == "constant"]
    kind = POOLS[pool.op]
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # The epilogue starts from dx, the pool grad's float32 tile; its operands (h, of dx's
    # shape) are loaded at the tile's own pixels and channels.
    expression, operands = generate_epilogue(body, constants + chain, pool.outputs[0])
    out_dtype = (chain[-1] if chain else pool).outputs[0].dtype
    (ph, pw), (sh, sw), padding = pool.attrs["pool_size"], pool.attrs["strides"], pool.attrs["padding"]
    geometry = f"{kind} pool of {ph}x{pw} windows, strides {sh}x{sw}, padding '{padding}'"
    check = _check(pool, kind, geometry, index_of) + contiguous_operands(operands)
    if padding == "same":
        # The forward's pads (kcomp.ir.ops.conv_grad._pads): the 'same' pad before each axis.
        pads = f"""    pad_top = same_padding(H, {ph}, {sh}, 1)[0]
    pad_left = same_padding(W, {pw}, {sw}, 1)[0]
"""
    else:
        pads = "    pad_top, pad_left = 0, 0\n"
    launch = f"""{check}{pads}    P = N * H * W
    # allocate
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=torch.{out_dtype})
    # grid
    config = config or candidate_configs(P, C, interpret=dy.device.type == "cpu")[0]
    # launch
    pool2d_grad_kernel[grid(P, C, config)](
        x, dy, out, H, W, C, OH, OW, P, pad_top, pad_left,
        {operand_args(operands, tile=True, count=4, unused="out")},
        EPILOGUE=epilogue, POOL="{kind}", PH={ph}, PW={pw}, SH={sh}, SW={sw},
        BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )
    return out
"""
    imports = "from kcomp.kernels.pool2d_grad import candidate_configs, grid, pool2d_grad_kernel"
    if padding == "same":
        imports = "from kcomp.ir.ops.conv import same_padding\n" + imports
    return Generated(imports, expression, launch)
