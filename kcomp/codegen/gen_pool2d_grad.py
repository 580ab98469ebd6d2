"""Generator for the pool2d_grad template: the gradient of a max or average pool.

The body is [constants...] pool grad, elementwise chain...: the pool-grad node
fixes the pool (window, strides, padding), which goes into the binding; image
sizes are read at run time from the tensors. max_pool2d_grad takes (x, dy) and
recomputes each window's maximum from x; avg_pool2d_grad takes only dy, its image
size (H, W) is the node's input_size. The chain (in a training step, relu's
gradient mask dx * greater(h, 0)) is the epilogue, applied before the store.
"""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.pool2d_grad import POOL_GRADS


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, pool, chain, constants = kernel.body, kernel.anchor, list(kernel.epilogue), list(kernel.constants)
    kind = POOL_GRADS[pool.op]
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    reads = [index_of[v.id] for v in pool.inputs]
    x, dy = reads if kind == "max" else (None, reads[0])
    input_size = None if kind == "max" else tuple(pool.attrs["input_size"])  # max reads it from x
    # The epilogue starts from dx, the pool grad's float32 tile; its operands (h, of dx's
    # shape) are loaded at the tile's own pixels and channels.
    epilogue, operands = generate_epilogue(body, constants + chain, pool.outputs[0])
    out_dtype = (chain[-1] if chain else pool).outputs[0].dtype
    return GeneratedKernel(epilogue, {
        "pool": repr(kind),
        "x": repr(x),
        "dy": repr(dy),
        "input_size": repr(input_size),
        "pool_size": repr(tuple(pool.attrs["pool_size"])),
        "strides": repr(tuple(pool.attrs["strides"])),
        "padding": repr(pool.attrs["padding"]),
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "out_dtype": f"torch.{out_dtype}",
    })


GENERATES = {"pool2d_grad": generate}  # template name -> generator (kcomp.codegen.module collects these)
