"""Generator for the pool2d template: a max or average pool no conv absorbed.

The pool is fixed by the body's one node (window, strides, padding), which the
binding carries; image sizes are read at run time. There is no hook: the
template's window is set by constexpr arguments.
"""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.pool2d import POOLS


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, pool = kernel.body, kernel.anchor
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    return GeneratedKernel("# pool2d: no hook; the window is constexpr in the template.\n", {
        "x": repr(index_of[pool.inputs[0].id]),
        "pool": repr(POOLS[pool.op]),
        "pool_size": repr(tuple(pool.attrs["pool_size"])),
        "strides": repr(tuple(pool.attrs["strides"])),
        "padding": repr(pool.attrs["padding"]),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


GENERATES = {"pool2d": generate}  # template name -> generator (kcomp.codegen.module collects these)
