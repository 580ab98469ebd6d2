"""Reverse-mode autodiff on the IR: gradients as more IR nodes, built from VJP rules.

Each registry op's `vjp` rule receives the builder, the forward node and the
gradients of its outputs, and returns one gradient per input (None where an
input has no gradient: integer ids, or nothing depends on it), or an
`Upstream` that also names gradients of values further up. `gradients`
walks the forward nodes backwards, calls the rules, and adds up the
contributions of values used several times. The backward nodes are ordinary
registry ops, so the fusion passes treat the backward graph like any other.

    b = GraphBuilder("step")        # forward nodes already emitted, loss a scalar Value
    grads = gradients(b, loss, params)
"""

from kcomp.errors import GraphError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Value
from kcomp.ir.ops.grad_support import Upstream, computed_from
from kcomp.ir.registry import OPS
from kcomp.ir.types import FLOAT_DTYPES


def _accumulate(b: GraphBuilder, grads: dict[int, Value], v: Value, g: Value | None) -> None:
    if g is None:
        return
    if g.shape != v.shape or g.dtype != v.dtype:
        raise GraphError(f"a VJP rule returned a gradient {g.spec} for a value {v.spec}")
    grads[v.id] = g if v.id not in grads else b.emit1("add", [grads[v.id], g])


def gradients(b: GraphBuilder, loss: Value, wrt: list[Value]) -> list[Value | None]:
    """d loss / d each of `wrt` (None where the loss does not depend on it)."""
    if loss.shape != () or loss.dtype not in FLOAT_DTYPES:
        raise GraphError(f"gradients need a float scalar loss, received {loss.spec}")
    forward = list(b.nodes)
    grads: dict[int, Value] = {loss.id: b.emit1("constant", [], value=1.0, dtype=loss.dtype)}
    needed = computed_from(forward, {v.id for v in wrt})
    for node in reversed(forward):
        outs = [grads.get(v.id) for v in node.outputs]
        if all(g is None for g in outs) or not any(v.id in needed for v in node.inputs):
            continue
        rule = OPS[node.op].vjp
        if rule is None:
            raise GraphError(f"op {node.op!r} (from {node.origin or 'no layer'}) has no gradient rule yet")
        with b.scope(f"{node.origin}/grad" if node.origin else "grad"):
            in_grads = rule(b, node, outs)
            extra = []
            if isinstance(in_grads, Upstream):
                in_grads, extra = in_grads.inputs, in_grads.upstream
            for v, g in [*zip(node.inputs, in_grads, strict=True), *extra]:
                if v.id in needed:
                    _accumulate(b, grads, v, g)  # a sum where a value feeds several nodes
    return [grads.get(v.id) for v in wrt]
