"""Generators for the embedding templates (kernels/gather.py): the lookup's epilogue (the
elementwise ops after it) and which inputs are which; the gradient has no fused expression."""

from kcomp.codegen.epilogue import generate as generate_epilogue
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts

NO_HOOKS = "# {name}: no fused expression; the template gathers (or sums) rows as they are.\n"


def generate_embedding(kernel: KernelParts) -> GeneratedKernel:
    """The lookup, and the elementwise ops after it as the epilogue (on float32 tiles)."""
    body, chain = kernel.body, list(kernel.epilogue)
    at = {v.id: i for i, v in enumerate(body.inputs)}
    ids, table = kernel.anchor.inputs
    epilogue, operands = generate_epilogue(body, list(kernel.constants) + chain, kernel.anchor.outputs[0])
    return GeneratedKernel(epilogue, {
        "ids": repr(at[ids.id]),
        "table": repr(at[table.id]),
        "epilogue": "epilogue",
        "has_epilogue": repr(bool(chain)),
        "operands": repr(tuple(operands)),
        "out_dtype": f"torch.{body.outputs[0].dtype}",
    })


def generate_embedding_grad_chunks(kernel: KernelParts) -> GeneratedKernel:
    at = {v.id: i for i, v in enumerate(kernel.body.inputs)}
    sorted_ids, positions, dy = kernel.anchor.inputs
    return GeneratedKernel(NO_HOOKS.format(name="embedding_grad_chunks"), {
        "sorted_ids": repr(at[sorted_ids.id]), "positions": repr(at[positions.id]), "dy": repr(at[dy.id]),
        "chunk": repr(kernel.anchor.attrs["chunk"]),
    })


def generate_embedding_grad(kernel: KernelParts) -> GeneratedKernel:
    at = {v.id: i for i, v in enumerate(kernel.body.inputs)}
    sorted_ids, sums = kernel.anchor.inputs
    attrs = kernel.anchor.attrs
    return GeneratedKernel(NO_HOOKS.format(name="embedding_grad"), {
        "sorted_ids": repr(at[sorted_ids.id]), "sums": repr(at[sums.id]), "input_dim": repr(attrs["input_dim"]),
        "chunk": repr(attrs["chunk"]), "out_dtype": f"torch.{attrs['dtype']}",
    })


GENERATES = {"embedding": generate_embedding, "embedding_grad_chunks": generate_embedding_grad_chunks,
             "embedding_grad": generate_embedding_grad}
