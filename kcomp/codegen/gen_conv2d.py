"""Generator for the conv2d template: Conv2D, its epilogue, and an absorbed 'valid' pool.

The body is [constants...] conv2d, elementwise chain..., optional max_pool2d /
avg_pool2d. Strides, padding, dilation and the pool come from the body's
nodes; image sizes are read from the tensors at run time (the batch varies).
"""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args

POOLS = {"max_pool2d": "max", "avg_pool2d": "avg"}


def generate(body) -> Generated:
    nodes = [n for n in body.nodes if n.op != "constant"]
    constants = [n for n in body.nodes if n.op == "constant"]
    conv = nodes[0]
    assert conv.op == "conv2d" and conv.attrs["groups"] == 1
    pool = nodes[-1] if nodes[-1].op in POOLS else None
    chain = nodes[1:-1] if pool is not None else nodes[1:]
    if pool is not None:
        assert pool.attrs["padding"] == "valid", "the conv2d template absorbs only 'valid' pools"
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    x, w = (index_of[v.id] for v in conv.inputs)
    expression, operands = generate_epilogue(body, constants + chain, conv.outputs[0])
    (sh, sw), (dh, dw) = conv.attrs["strides"], conv.attrs["dilation"]
    padding = conv.attrs["padding"]
    if pool is not None:
        kind, (ph, pw), (psh, psw) = POOLS[pool.op], pool.attrs["pool_size"], pool.attrs["strides"]
        pool_sizes = f"""    OH = (CH - {ph}) // {psh} + 1  # 'valid' pool of {ph}x{pw} windows, strides {psh}x{psw}
    OW = (CW - {pw}) // {psw} + 1
"""
    else:
        kind, (ph, pw), (psh, psw) = "none", (1, 1), (1, 1)
        pool_sizes = "    OH, OW = CH, CW\n"
    if padding == "same":
        pads = f"""    pad_top = same_padding(H, KH, {sh}, {dh})[0]
    pad_left = same_padding(W, KW, {sw}, {dw})[0]
"""
    else:
        pads = "    pad_top, pad_left = 0, 0\n"
    out_dtype = body.outputs[-1].dtype
    prepool = len(body.outputs) == 2  # (pre-pool activation, pooled): a training step reads both
    if prepool:
        allocate = (f"(torch.empty((N, CH, CW, F), device=x.device, dtype=torch.{body.outputs[0].dtype}), "
                    f"torch.empty((N, OH, OW, F), device=x.device, dtype=torch.{out_dtype}))")
        unpack = "prepool, y = out"
    else:
        allocate = f"torch.empty((N, OH, OW, F), device=x.device, dtype=torch.{out_dtype})"
        unpack = "prepool, y = out, out  # no pre-pool output: PREPOOL is unused"
    launch = f"""    # check: x is NHWC (N, H, W, C); the kernel (KH, KW, C, F) is read as a row-major (KH*KW*C, F) matrix.
    x = in{x}.contiguous()
    w = in{w}.contiguous()
    N, H, W, C = x.shape
    KH, KW, C_in, F = w.shape
    if C_in != C:
        raise ValueError(f"conv2d: input {{tuple(x.shape)}} has {{C}} channels, kernel {{tuple(w.shape)}} expects {{C_in}}")
{contiguous_operands(operands)}    CH = output_size(H, KH, {sh}, {dh}, "{padding}")  # conv output, before any pool
    CW = output_size(W, KW, {sw}, {dw}, "{padding}")
{pads}{pool_sizes}    M, K = N * OH * OW, KH * KW * C
    # allocate
    if out is None:
        out = {allocate}
    {unpack}
    # grid
    config = config or candidate_configs(M, F, K, interpret=x.device.type == "cpu", pool={kind != "none"})[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    conv2d_kernel[grid(M, F, config)](
        x, w, y, prepool,
        H, W, C, F, K, KW,
        CH, CW, OH, OW, M,
        {sh}, {sw}, {dh}, {dw}, pad_top, pad_left,
        {operand_args(operands, tile=True, count=4, unused="y")},
        EPILOGUE=epilogue, POOL="{kind}", PH={ph}, PW={pw}, PSH={psh}, PSW={psw},
        STORE_PREPOOL={prepool}, PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    imports = (
        "from kcomp.ir.ops.conv import output_size, same_padding\n"
        "from kcomp.kernels.conv2d import candidate_configs, conv2d_kernel, grid"
    )
    return Generated(imports, expression, launch)
