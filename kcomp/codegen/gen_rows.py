"""Generators for the row templates: softmax / log_softmax and layer_norm (no generated hook)."""

from kcomp.codegen.generated import Generated

IMPORTS = "from kcomp.kernels.rows import grid, layer_norm_kernel, row_config, softmax_kernel"

_COMMON = """    # check: rows are the last axis of a contiguous tensor.
    x = in0.contiguous()
    n_cols = x.shape[-1]
    n_rows = x.numel() // max(n_cols, 1)
    # allocate
    if out is None:
        out = torch.empty(x.shape, device=x.device, dtype=torch.{dtype})
    # grid
    config = config or row_config(n_cols, interpret=x.device.type == "cpu")
    # launch
"""


def generate_softmax(body) -> Generated:
    node = body.nodes[0]
    launch = _COMMON.format(dtype=body.outputs[0].dtype) + f"""    softmax_kernel[grid(n_rows, config)](
        x, out, n_rows, n_cols, LOG={node.op == "log_softmax"},
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    return Generated(IMPORTS, "", launch)


def generate_layer_norm(body) -> Generated:
    node = body.nodes[0]
    a = node.attrs
    gamma = "in1" if a["scale"] else "x"
    beta = f"in{1 + int(a['scale'])}" if a["center"] else "x"
    launch = _COMMON.format(dtype=body.outputs[0].dtype) + f"""    layer_norm_kernel[grid(n_rows, config)](
        x, out, {gamma}, {beta}, n_rows, n_cols, {float(a["epsilon"])!r},
        SCALE={a["scale"]}, CENTER={a["center"]},
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    return Generated(IMPORTS, "", launch)
