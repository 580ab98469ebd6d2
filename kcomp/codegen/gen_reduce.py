"""Generator for the reduce template: sum / mean / max over consecutive axes.

The reduced axes (from the body's node) split the input's shape into
(outer, R, inner), read at run time (the batch varies); keepdims only shapes
the output. There is no fused expression.
"""

from kcomp.codegen.generated import Generated

OPS = ("sum", "mean", "max")


def reduced_axes(axes, rank: int) -> list[int]:
    """The registry's reading of `axes`: None is every axis, () none."""
    if axes is None:
        return list(range(rank))
    return sorted(a % rank for a in axes)


def generate(body) -> Generated:
    (node,) = [n for n in body.nodes if n.op != "constant"]
    assert node.op in OPS
    rank = node.inputs[0].rank
    axes = reduced_axes(node.attrs["axes"], rank)
    if axes and axes != list(range(axes[0], axes[-1] + 1)):
        raise ValueError(f"reduce template: axes {tuple(axes)} are not consecutive")
    first, stop = (axes[0], axes[-1] + 1) if axes else (rank, rank)  # no axes: R = 1
    if node.attrs["keepdims"]:
        out_shape = f"(*x.shape[:{first}], {'1, ' * (stop - first)}*x.shape[{stop}:])"
    else:
        out_shape = f"(*x.shape[:{first}], *x.shape[{stop}:])"
    launch = f"""    # check: the input viewed as contiguous (outer, R, inner), reducing axes {tuple(axes)} (R).
    x = in0.contiguous()
    outer = x.shape[:{first}].numel()
    R = x.shape[{first}:{stop}].numel()
    inner = x.shape[{stop}:].numel()
    # allocate: (outer, inner) in memory; keepdims={node.attrs["keepdims"]} only shapes it
    if out is None:
        out = torch.empty({out_shape}, device=x.device, dtype=torch.{body.outputs[0].dtype})
    # grid
    config = config or candidate_configs(outer, R, inner, interpret=x.device.type == "cpu")[0]
    # launch
    reduce_kernel[grid(outer * inner, config)](
        x, out, R, inner, outer * inner,
        OP="{node.op}", BLOCK_R=config["BLOCK_R"], BLOCK_OUT=config["BLOCK_OUT"], num_warps=config["num_warps"],
    )
    return out
"""
    imports = "from kcomp.kernels.reduce import candidate_configs, grid, reduce_kernel"
    return Generated(imports, "# reduce: no fused expression; OP is constexpr in the template.\n", launch)
