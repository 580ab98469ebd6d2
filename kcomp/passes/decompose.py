"""decompose: rewrite coarse ops into primitives the fusion templates absorb.

batch_norm in inference form becomes y = x * scale + shift with
scale = gamma / sqrt(var + eps) and shift = beta - mean * scale. scale and
shift depend on weights only, so the runtime computes them once per weight
update, and the two elementwise ops fuse into the epilogue of the conv or
matmul before them.
"""

from kcomp.ir.graph import Node
from kcomp.passes.rewrite import Rewriter, rewrite_to_fixpoint


def batch_norm_to_scale_shift(node: Node, rw: Rewriter):
    x, mean, var, *rest = node.inputs
    a = node.attrs
    eps = rw.emit1("constant", [], value=float(a["epsilon"]), dtype=var.dtype)
    scale = rw.emit1("rsqrt", [rw.emit1("add", [var, eps])])
    if a["scale"]:
        scale = rw.emit1("mul", [rest.pop(0), scale])
    shift = rw.emit1("neg", [rw.emit1("mul", [mean, scale])])
    if a["center"]:
        shift = rw.emit1("add", [rest.pop(0), shift])
    axis = a["axis"] % x.rank
    if axis != x.rank - 1:
        # Channel vectors broadcast from their axis: (C,) -> (C, 1, ..., 1).
        trailing = (scale.shape[0],) + (1,) * (x.rank - 1 - axis)
        scale = rw.emit1("reshape", [scale], shape=trailing)
        shift = rw.emit1("reshape", [shift], shape=trailing)
    return [rw.emit1("add", [rw.emit1("mul", [x, scale]), shift])]


RULES = [("batch_norm", batch_norm_to_scale_shift)]


def decompose(graph):
    return rewrite_to_fixpoint(graph, RULES)
