"""Generator for the conv2d template: Conv2D, its epilogue, and an absorbed 'valid' pool.

The body is [constants...] [prologue chain...] conv2d, elementwise chain..., optional
max_pool2d / avg_pool2d. The prologue is generated from the ops that produced the image (a
Rescaling's, a Normalization's: scalar and per-channel operands), the epilogue from the chain; strides, padding,
dilation and the pool come from the body's nodes into the binding; image sizes
are read from the tensors at run time (the batch varies).
"""

from kcomp.codegen.epilogue import PROLOGUE_PARAMS
from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.kernels.operands import chain_input
from kcomp.kernels.matmul import cast_b_node
from kcomp.kernels.pool2d import POOLS


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, conv, constants = kernel.body, kernel.anchor, list(kernel.constants)
    assert conv.op == "conv2d" and conv.attrs["groups"] == 1
    # The epilogue: the elementwise chain, then the pool when one was absorbed.
    pool = kernel.epilogue[-1] if kernel.epilogue and kernel.epilogue[-1].op in POOLS else None
    chain = list(kernel.epilogue[:-1] if pool is not None else kernel.epilogue)
    if pool is not None:
        assert pool.attrs["padding"] == "valid", "the conv2d template absorbs only 'valid' pools"
        kind, size, strides = POOLS[pool.op], pool.attrs["pool_size"], pool.attrs["strides"]
    else:
        kind, size, strides = "none", (1, 1), (1, 1)
    index_of = {v.id: i for i, v in enumerate(body.inputs)}
    # The image is what the prologue chain starts from (the conv's own input without one).
    cast_w = cast_b_node(kernel.prologue, conv)  # the filter's cast, done as it loads (CAST_W)
    prologue_nodes = [n for n in kernel.prologue if n is not cast_w]
    x_value = chain_input(prologue_nodes) if prologue_nodes else conv.inputs[0]
    x, w = index_of[x_value.id], index_of[(conv.inputs[1] if cast_w is None else cast_w.inputs[0]).id]
    prologue, pro_operands = generate_epilogue(body, constants + prologue_nodes, x_value, "prologue", PROLOGUE_PARAMS)
    hook, operands = generate_epilogue(body, constants + chain, conv.outputs[0])
    prepool = len(body.outputs) == 2  # (pre-pool activation, pooled): a training step reads both
    return GeneratedKernel(prologue + "\n\n" + hook, {
        "epilogue": "epilogue",
        "operands": repr(tuple(operands)),
        "prologue": "prologue",
        "has_prologue": repr(bool(prologue_nodes)),
        "prologue_operands": repr(tuple(pro_operands)),
        "x": repr(x),
        "w": repr(w),
        "strides": repr(tuple(conv.attrs["strides"])),
        "dilation": repr(tuple(conv.attrs["dilation"])),
        "padding": repr(conv.attrs["padding"]),
        "pool": repr(kind),
        "pool_size": repr(tuple(size)),
        "pool_strides": repr(tuple(strides)),
        "prepool_dtype": f"torch.{body.outputs[0].dtype}" if prepool else "None",
        "out_dtype": f"torch.{body.outputs[-1].dtype}",
        "cast_w": repr("" if cast_w is None else cast_w.outputs[0].dtype),
    })


GENERATES = {"conv2d": generate}  # template name -> generator (kcomp.codegen.module collects these)
