"""Generator for the softmax cross-entropy template (kernels/softmax_xent.py).

The body is softmax_cross_entropy, softmax_cross_entropy_grad, or both (the
loss and its gradient merged by the fusion pass: they read the same
probabilities and labels), with the accuracy metric's `correct` on the same
rows when the step computes it. Which outputs exist and whether labels are class
ids are constexpr flags; there is no fused expression, only a binding.
"""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.ir.types import FLOAT_DTYPES

# op -> the name of its output in the binding's `outputs` (what the template computes and stores)
OUTPUT_NAMES = {"softmax_cross_entropy": "loss", "softmax_cross_entropy_grad": "dlogits", "correct": "correct"}


def generate(kernel: KernelParts) -> GeneratedKernel:
    body, anchor = kernel.body, kernel.anchor  # the loss, else its gradient alone; extra: what else reads the rows
    grad_node = next((n for n in (anchor, *kernel.extra) if n.op == "softmax_cross_entropy_grad"), None)
    index = {v.id: i for i, v in enumerate(body.inputs)}
    probs, labels = (index[v.id] for v in anchor.inputs[:2])
    # The outputs in the body's order, each named by the node that computes it (through a cast after
    # it: the output is stored in the cast's dtype).
    producer = {v.id: n for n in body.nodes for v in n.outputs}
    for v in body.outputs:
        while producer[v.id].op == "cast":
            producer[v.id] = producer[producer[v.id].inputs[0].id]
    return GeneratedKernel("# softmax cross-entropy: no fused expression; flags are constexpr in the template.\n", {
        "probs": repr(probs),
        "labels": repr(labels),
        "grad": repr(index[grad_node.inputs[2].id] if grad_node else None),
        "sparse": repr(anchor.inputs[1].dtype not in FLOAT_DTYPES),
        "outputs": repr(tuple(OUTPUT_NAMES[producer[v.id].op] for v in body.outputs)),
        "out_dtypes": "(" + ", ".join(f"torch.{v.dtype}" for v in body.outputs) + ("," if len(body.outputs) == 1 else "") + ")",
    })


GENERATES = {"softmax_xent": generate}  # template name -> generator (kcomp.codegen.module collects these)
