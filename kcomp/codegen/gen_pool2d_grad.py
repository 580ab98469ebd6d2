"""Generator for the pool2d_grad template: the gradient of a max or average pool.

The body's one node fixes the pool (window, strides, padding); image sizes are
read at run time from the tensors. max_pool2d_grad takes (x, dy) and
recomputes each window's maximum from x; avg_pool2d_grad takes only dy, its
image size (H, W) is the node's input_size. There is no fused expression.
"""

from kcomp.codegen.generated import Generated

POOLS = {"max_pool2d_grad": "max", "avg_pool2d_grad": "avg"}


def _check(pool, kind: str, geometry: str) -> str:
    """The wrapper's check step: name the tensors and their (N, H, W, C) / (N, OH, OW, C) sizes."""
    if kind == "max":
        return f"""    # check: x is the pool's NHWC input (N, H, W, C), dy its gradient (N, OH, OW, C); {geometry}.
    x = in0.contiguous()
    dy = in1.contiguous()
    N, H, W, C = x.shape
    OH, OW = dy.shape[1], dy.shape[2]
"""
    return f"""    # check: dy is the pool's gradient (N, OH, OW, C) of an (H, W) image; {geometry}.
    dy = in0.contiguous()
    x = dy  # the average needs no input; the template's X argument goes unread
    N, OH, OW, C = dy.shape
    H, W = {pool.attrs["input_size"][0]}, {pool.attrs["input_size"][1]}
"""


def generate(body) -> Generated:
    (pool,) = [n for n in body.nodes if n.op != "constant"]
    kind = POOLS[pool.op]
    (ph, pw), (sh, sw), padding = pool.attrs["pool_size"], pool.attrs["strides"], pool.attrs["padding"]
    geometry = f"{kind} pool of {ph}x{pw} windows, strides {sh}x{sw}, padding '{padding}'"
    check = _check(pool, kind, geometry)
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
        out = torch.empty((N, H, W, C), device=dy.device, dtype=torch.{body.outputs[0].dtype})
    # grid
    config = config or candidate_configs(P, C, interpret=dy.device.type == "cpu")[0]
    # launch
    pool2d_grad_kernel[grid(P, C, config)](
        x, dy, out, H, W, C, OH, OW, P, pad_top, pad_left,
        POOL="{kind}", PH={ph}, PW={pw}, SH={sh}, SW={sw},
        BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )
    return out
"""
    imports = "from kcomp.kernels.pool2d_grad import candidate_configs, grid, pool2d_grad_kernel"
    if padding == "same":
        imports = "from kcomp.ir.ops.conv import same_padding\n" + imports
    expression = "# pool2d_grad: no fused expression; the window and strides are constexpr in the template.\n"
    return Generated(imports, expression, launch)
