"""Generator for the affine_transform template (kernels/augment.py): which inputs are the images,
the transform (or, with augment_params fused as the prologue, the step its draws read) and the
modes, which the binding carries; no hook (the resampling and the draws are the template's, their
kinds and constants constexpr)."""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.augment import draw_ranges
from kcomp.ir.ops.kernel import KernelParts


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    attrs = node.attrs
    x = node.inputs[0]
    if not kernel.prologue:  # the transform is an input
        drawn = {"transform": repr(index_of[node.inputs[1].id]), "step": "None", "kind": "''", "seed": "0",
                 "ranges": "((0.0, 1.0),)"}
    else:  # the augment_params drawing the transform: the kernel draws it
        (params,) = kernel.prologue
        a = params.attrs
        drawn = {"transform": "None", "step": repr(index_of[params.inputs[1].id]) if len(params.inputs) == 2 else "None",
                 "kind": repr(a["kind"]), "seed": repr(a["seed"] & (2**64 - 1)),
                 "ranges": repr(draw_ranges(a["kind"], a["factor"], x.shape[1], x.shape[2]))}
    return GeneratedKernel("# affine_transform: no hook; modes, draws and constants are constexpr in the template.\n", {
        "x": repr(index_of[x.id]),
        **drawn,
        "interpolation": repr(attrs["interpolation"]),
        "fill_mode": repr(attrs["fill_mode"]),
        "fill_value": repr(float(attrs["fill_value"])),
        "output_size": repr(attrs["output_size"]),
        "out_dtype": f"torch.{body.outputs[-1].dtype}",
        "stores_transform": repr(len(body.outputs) == 2),  # (the drawn transform, the images)
    })


def generate_grad(kernel: KernelParts) -> GeneratedKernel:
    """affine_transform_grad (kernels/augment_grad.py): which inputs are dy and the transform, the modes."""
    body, node = kernel.body, kernel.anchor
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    attrs = node.attrs
    return GeneratedKernel("# affine_transform_grad: no hook; modes and sizes are the binding's.\n", {
        "dy": repr(index_of[node.inputs[0].id]),
        "transform": repr(index_of[node.inputs[1].id]),
        "interpolation": repr(attrs["interpolation"]),
        "fill_mode": repr(attrs["fill_mode"]),
        "input_size": repr(tuple(attrs["input_size"])),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


GENERATES = {"affine_transform": generate, "affine_transform_grad": generate_grad}  # template name -> generator
