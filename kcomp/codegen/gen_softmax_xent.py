"""Generator for the softmax cross-entropy template (kernels/softmax_xent.py).

The body is softmax_cross_entropy, softmax_cross_entropy_grad, or both (the
loss and its gradient merged by the fusion pass: they read the same
probabilities and labels), with the accuracy metric's `correct` on the same
rows when the step computes it. Which outputs exist and whether labels are class
ids are constexpr flags; there is no fused expression.
"""

from kcomp.codegen.generated import Generated
from kcomp.ir.types import FLOAT_DTYPES

IMPORTS = "from kcomp.kernels.softmax_xent import softmax_xent_kernel\nfrom kcomp.kernels.rows import grid, row_config"


ROLES = {"softmax_cross_entropy": "loss", "softmax_cross_entropy_grad": "dlogits", "correct": "correct"}


def generate(body) -> Generated:
    by_op = {n.op: n for n in body.nodes}
    loss_node = by_op.get("softmax_cross_entropy")
    grad_node = by_op.get("softmax_cross_entropy_grad")
    index = {v.id: i for i, v in enumerate(body.inputs)}
    first = loss_node or grad_node
    probs, labels = (f"in{index[v.id]}" for v in first.inputs[:2])
    g = f"in{index[grad_node.inputs[2].id]}" if grad_node else "None"
    sparse = first.inputs[1].dtype not in FLOAT_DTYPES
    # The outputs in the body's order, each named by the node that computes it.
    producer = {v.id: n for n in body.nodes for v in n.outputs}
    names = [ROLES[producer[v.id].op] for v in body.outputs]
    shapes = {"loss": "p.shape[:-1]", "dlogits": "p.shape", "correct": "p.shape[:-1]"}
    allocate = [f"torch.empty({shapes[name]}, device=p.device, dtype=torch.{v.dtype})" for name, v in zip(names, body.outputs)]
    unpack = f"{names[0]} = out" if len(names) == 1 else f"{', '.join(names)} = out"
    has_loss, has_grad, has_correct = ("loss" in names), ("dlogits" in names), ("correct" in names)
    launch = f"""    # check: rows are the last axis of contiguous probabilities; labels are {"class ids" if sparse else "rows"}.
    p = {probs}.contiguous()
    labels = {labels}.contiguous()
    g = {g if g == "None" else g + ".contiguous()"}
    n_cols = p.shape[-1]
    n_rows = p.numel() // max(n_cols, 1)
    # allocate: {" and ".join(names)}
    if out is None:
        out = {allocate[0] if len(allocate) == 1 else "(" + ", ".join(allocate) + ")"}
    {unpack}
    # grid
    config = config or row_config(n_cols, interpret=p.device.type == "cpu")
    # launch
    softmax_xent_kernel[grid(n_rows, config)](
        p, labels, {"g" if has_grad else "p"}, {"loss" if has_loss else "p"}, {"dlogits" if has_grad else "p"},
        {"correct" if has_correct else "p"}, n_rows, n_cols,
        SPARSE={sparse}, HAS_LOSS={has_loss}, HAS_GRAD={has_grad}, HAS_CORRECT={has_correct},
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    return Generated(IMPORTS, "# softmax cross-entropy: no fused expression; flags are constexpr in the template.\n", launch)
