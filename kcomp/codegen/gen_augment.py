"""Generator for the affine_transform template (kernels/augment.py): which inputs are the images
and the transform, and the op's modes, which the binding carries; no hook (the resampling is
the template's, its modes constexpr)."""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, node = kernel.body, kernel.anchor
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    attrs = node.attrs
    return GeneratedKernel("# affine_transform: no hook; fill mode and interpolation are constexpr in the template.\n", {
        "x": repr(index_of[node.inputs[0].id]),
        "transform": repr(index_of[node.inputs[1].id]),
        "interpolation": repr(attrs["interpolation"]),
        "fill_mode": repr(attrs["fill_mode"]),
        "fill_value": repr(float(attrs["fill_value"])),
        "output_size": repr(attrs["output_size"]),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


GENERATES = {"affine_transform": generate}  # template name -> generator (kcomp.codegen.module collects these)
