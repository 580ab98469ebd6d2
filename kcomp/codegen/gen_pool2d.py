"""Generator for the pool2d template: a max or average pool no conv absorbed.

The pool is fixed by the body's one node (window, strides, padding); image
sizes are read at run time. There is no fused expression: the template's
window is set by constexpr arguments.
"""

from kcomp.codegen.generated import Generated

POOLS = {"max_pool2d": "max", "avg_pool2d": "avg"}


def generate(body) -> Generated:
    (pool,) = [n for n in body.nodes if n.op != "constant"]
    kind = POOLS[pool.op]
    (ph, pw), (sh, sw), padding = pool.attrs["pool_size"], pool.attrs["strides"], pool.attrs["padding"]
    if padding == "same":
        pads = f"""    pad_top = same_padding(H, {ph}, {sh}, 1)[0]
    pad_left = same_padding(W, {pw}, {sw}, 1)[0]
"""
    else:
        pads = "    pad_top, pad_left = 0, 0\n"
    launch = f"""    # check: x is NHWC (N, H, W, C); {kind} pool of {ph}x{pw} windows, strides {sh}x{sw}, padding '{padding}'.
    x = in0.contiguous()
    N, H, W, C = x.shape
    OH = output_size(H, {ph}, {sh}, 1, "{padding}")
    OW = output_size(W, {pw}, {sw}, 1, "{padding}")
{pads}    P = N * OH * OW
    # allocate
    if out is None:
        out = torch.empty((N, OH, OW, C), device=x.device, dtype=torch.{body.outputs[0].dtype})
    # grid
    config = config or candidate_configs(P, C, interpret=x.device.type == "cpu")[0]
    # launch
    pool2d_kernel[grid(P, C, config)](
        x, out, H, W, C, OH, OW, P,
        {sh}, {sw}, pad_top, pad_left,
        POOL="{kind}", PH={ph}, PW={pw}, BP=config["BP"], BC=config["BC"], num_warps=config["num_warps"],
    )
    return out
"""
    imports = (
        "from kcomp.ir.ops.conv import output_size, same_padding\n"
        "from kcomp.kernels.pool2d import candidate_configs, grid, pool2d_kernel"
    )
    return Generated(imports, "# pool2d: no fused expression; the window is constexpr in the template.\n", launch)
