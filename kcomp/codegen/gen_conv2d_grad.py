"""Generators for the conv2d backward templates (kernels/conv2d_grad.py).

conv2d_grad_filter: body [constants...] [prologue chain...] conv2d_backprop_filter [sum].
The prologue chain is the elementwise ops that produced dY (applied to each dY
tile as it loads); the optional sum over axes (0, 1, 2) of dY is the bias
gradient, a second output. conv2d_grad_input: body conv2d_backprop_input alone.

Strides, dilation and padding come from the node; image sizes are read from
the tensors at run time (the batch varies), except the input gradient's
(H, W), which is the node's input_size.
"""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import Generated, contiguous_operands, operand_args
from kcomp.passes.fuse import chain_input


def _geometry(conv) -> tuple[tuple[int, int], tuple[int, int], str]:
    assert conv.attrs["groups"] == 1, "the conv2d_grad templates compute groups=1 only"
    return conv.attrs["strides"], conv.attrs["dilation"], conv.attrs["padding"]


def _pads(kh: int | str, kw: int | str, strides, dilation, padding: str) -> str:
    """Lines defining pad_top and pad_left, the forward's padding before each axis."""
    if padding != "same":
        return "    pad_top, pad_left = 0, 0\n"
    (sh, sw), (dh, dw) = strides, dilation
    return f"""    pad_top = same_padding(H, {kh}, {sh}, {dh})[0]  # the forward's 'same' padding
    pad_left = same_padding(W, {kw}, {sw}, {dw})[0]
"""


def _check_output_size(kh: int | str, kw: int | str, strides, dilation, padding: str, what: str) -> str:
    """Lines raising when dY is not the forward's output for this input size."""
    (sh, sw), (dh, dw) = strides, dilation
    window = f"{kh}x{kw}" if isinstance(kh, int) else f"{{{kh}}}x{{{kw}}}"  # a number, or the variable's value
    return f"""    if (OH, OW) != (output_size(H, {kh}, {sh}, {dh}, "{padding}"), output_size(W, {kw}, {sw}, {dw}, "{padding}")):
        raise ValueError(f"{what}: gradient {{tuple(dy.shape)}} does not fit a {{H}}x{{W}} input and a {window} window")
"""


IMPORTS = "from kcomp.ir.ops.conv import output_size, same_padding\nfrom kcomp.kernels.conv2d_grad import "


def generate_filter(body) -> Generated:
    constants = [n for n in body.nodes if n.op == "constant"]
    nodes = [n for n in body.nodes if n.op != "constant"]
    conv = next(n for n in nodes if n.op == "conv2d_backprop_filter")
    column_sum = next((n for n in nodes if n.op == "sum"), None)  # dY's sums: the bias gradient
    prologue_nodes = [n for n in nodes if n is not conv and n is not column_sum]
    strides, dilation, padding = _geometry(conv)
    (sh, sw), (dh, dw) = strides, dilation
    kh, kw = conv.attrs["kernel_size"]
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # dY as loaded: what the prologue chain starts from, or the node's own input.
    dy_value = chain_input(prologue_nodes) if prologue_nodes else conv.inputs[1]
    x, dy = index_of[conv.inputs[0].id], index_of[dy_value.id]
    prologue, operands = generate_epilogue(body, constants + prologue_nodes, dy_value, "prologue", PROLOGUE_PARAMS)
    dw_dtype = conv.outputs[0].dtype
    if column_sum is None:
        allocate = f"torch.empty(({kh}, {kw}, C, F), device=x.device, dtype=torch.{dw_dtype})"
        unpack = "dw, bsum = out, out  # no bias gradient: BSUM is unused"
    else:
        allocate = (f"(torch.empty(({kh}, {kw}, C, F), device=x.device, dtype=torch.{dw_dtype}), "
                    f"torch.empty((F,), device=x.device, dtype=torch.{column_sum.outputs[0].dtype}))")
        unpack = "dw, bsum = out  # the filter gradient and dY's sums over (N, OH, OW), the bias gradient"
    launch = f"""    # check: x is the conv's NHWC input (N, H, W, C), dy its output's gradient (N, OH, OW, F);
    # dW ({kh}, {kw}, C, F) is computed as a row-major ({kh}*{kw}*C, F) matrix.
    x = in{x}.contiguous()
    dy = in{dy}.contiguous()
    N, H, W, C = x.shape
    N_dy, OH, OW, F = dy.shape
    if N_dy != N:
        raise ValueError(f"conv2d_backprop_filter: input {{tuple(x.shape)}} and gradient {{tuple(dy.shape)}} differ in batch")
{_check_output_size(kh, kw, strides, dilation, padding, "conv2d_backprop_filter")}{contiguous_operands(operands)}{_pads(kh, kw, strides, dilation, padding)}    M, L = {kh} * {kw} * C, N * OH * OW
    # allocate
    if out is None:
        out = {allocate}
    {unpack}
    # grid
    config = config or filter_configs(M, F, L, interpret=x.device.type == "cpu")[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    conv2d_grad_filter_kernel[grid(M, F, config)](
        x, dy, dw, bsum,
        H, W, C, F, {kw}, OH, OW, M, L,
        {sh}, {sw}, {dh}, {dw}, pad_top, pad_left,
        {operand_args(operands, tile=True, count=2, unused="dw")},
        PROLOGUE=prologue, HAS_PROLOGUE={bool(prologue_nodes)}, HAS_BSUM={column_sum is not None},
        PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    imports = IMPORTS + "conv2d_grad_filter_kernel, filter_configs, grid"
    return Generated(imports, prologue, launch)


def generate_input(body) -> Generated:
    (conv,) = [n for n in body.nodes if n.op != "constant"]
    assert conv.op == "conv2d_backprop_input"
    strides, dilation, padding = _geometry(conv)
    (sh, sw), (dh, dw) = strides, dilation
    height, width = conv.attrs["input_size"]
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    dy, w = (index_of[v.id] for v in conv.inputs)
    launch = f"""    # check: dy is the conv's output gradient (N, OH, OW, F), w its kernel (KH, KW, C, F);
    # dX is the NHWC gradient (N, {height}, {width}, C) of the conv's input.
    dy = in{dy}.contiguous()
    w = in{w}.contiguous()
    N, OH, OW, F = dy.shape
    KH, KW, C, F_w = w.shape
    H, W = {height}, {width}
    if F_w != F:
        raise ValueError(f"conv2d_backprop_input: gradient {{tuple(dy.shape)}} has {{F}} filters, kernel {{tuple(w.shape)}} {{F_w}}")
{_check_output_size("KH", "KW", strides, dilation, padding, "conv2d_backprop_input")}{_pads("KH", "KW", strides, dilation, padding)}    M, K = N * H * W, KH * KW * F
    # allocate
    if out is None:
        out = torch.empty((N, H, W, C), device=dy.device, dtype=torch.{conv.outputs[0].dtype})
    # grid
    config = config or input_configs(M, C, K, interpret=dy.device.type == "cpu")[0]
    meta = {{k: v for k, v in config.items() if k not in ("num_warps", "num_stages")}}
    # launch
    conv2d_grad_input_kernel[grid(M, C, config)](
        dy, w, out,
        H, W, C, F, KW, OH, OW, M, K,
        {sh}, {sw}, {dh}, {dw}, pad_top, pad_left,
        PRECISION=precision, **meta,
        num_warps=config["num_warps"], num_stages=config["num_stages"],
    )
    return out
"""
    imports = IMPORTS + "conv2d_grad_input_kernel, grid, input_configs"
    expression = "# conv2d_grad_input: no fused expression; the geometry is in the launch below.\n"
    return Generated(imports, expression, launch)
