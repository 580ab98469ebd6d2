"""Generator for the softmax cross-entropy template (kernels/softmax_xent.py).

The body is softmax_cross_entropy, softmax_cross_entropy_grad, or both
(the loss and its gradient merged by the fusion pass: they read the same
probabilities and labels). Which outputs exist and whether labels are class
ids are constexpr flags; there is no fused expression.
"""

from kcomp.codegen.generated import Generated
from kcomp.ir.types import FLOAT_DTYPES

IMPORTS = "from kcomp.kernels.rows import grid, row_config\nfrom kcomp.kernels.softmax_xent import softmax_xent_kernel"


def generate(body) -> Generated:
    by_op = {n.op: n for n in body.nodes}
    loss_node = by_op.get("softmax_cross_entropy")
    grad_node = by_op.get("softmax_cross_entropy_grad")
    index = {v.id: i for i, v in enumerate(body.inputs)}
    first = loss_node or grad_node
    probs, labels = (f"in{index[v.id]}" for v in first.inputs[:2])
    g = f"in{index[grad_node.inputs[2].id]}" if grad_node else "None"
    sparse = first.inputs[1].dtype not in FLOAT_DTYPES
    outputs = [v.id for v in body.outputs]
    has_loss = loss_node is not None and loss_node.outputs[0].id in outputs
    has_grad = grad_node is not None
    dtype = f"torch.{first.inputs[0].dtype}"
    allocate = []
    if has_loss:
        allocate.append(f"torch.empty(p.shape[:-1], device=p.device, dtype={dtype})")
    if has_grad:
        allocate.append(f"torch.empty(p.shape, device=p.device, dtype={dtype})")
    names = (["loss"] if has_loss else []) + (["dlogits"] if has_grad else [])
    unpack = f"{names[0]} = out" if len(names) == 1 else f"{', '.join(names)} = out"
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
        p, labels, {"g" if has_grad else "p"}, {"loss" if has_loss else "p"}, {"dlogits" if has_grad else "p"}, n_rows, n_cols,
        SPARSE={sparse}, HAS_LOSS={has_loss}, HAS_GRAD={has_grad},
        ROWS=config["ROWS"], BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )
    return out
"""
    return Generated(IMPORTS, "# softmax cross-entropy: no fused expression; flags are constexpr in the template.\n", launch)
