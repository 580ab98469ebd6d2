"""simplify: identities, reshape/transpose cleanup, constant folding, CSE, DCE.

Each rule is a small function listed in RULES with the op it applies to.
"""

from dataclasses import replace

import torch

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.ops.grad_support import SHAPE_ONLY_INPUTS
from kcomp.ir.registry import OPS
from kcomp.passes.pad_into_conv import RULES as PAD_INTO_CONV_RULES
from kcomp.passes.rewrite import Rewriter, dead_code_elimination, rewrite_to_fixpoint


def identity_dropout(node: Node, rw: Rewriter):
    """Dropout outside training is the identity."""
    if not node.attrs["training"] or node.attrs["rate"] == 0.0:
        return [node.inputs[0]]
    return None


def identity_linear(node: Node, rw: Rewriter):
    return [node.inputs[0]]


def one_process_replica_sum(node: Node, rw: Rewriter):
    """A sum over the processes is each value itself in one process, where the fused pipeline runs
    (a data-parallel step runs the graph before this pass, its replica_sums as all-reduces)."""
    return list(node.inputs)


def same_type_cast(node: Node, rw: Rewriter):
    return [node.inputs[0]] if node.attrs["dtype"] == node.inputs[0].dtype else None


def merge_reshapes(node: Node, rw: Rewriter):
    """reshape(reshape(x)) -> reshape(x); a reshape to x's own shape -> x."""
    x = node.inputs[0]
    if tuple(node.attrs["shape"]) == x.shape:
        return [x]
    inner = rw.producer_of(x)
    if inner is not None and inner.op == "reshape":
        return [rw.emit1("reshape", inner.inputs, shape=node.attrs["shape"])]
    return None


def merge_transposes(node: Node, rw: Rewriter):
    """transpose(transpose(x, p), q) -> transpose(x, p[q]); the identity permutation -> x."""
    perm = node.attrs["perm"]
    if perm == tuple(range(len(perm))):
        return [node.inputs[0]]
    inner = rw.producer_of(node.inputs[0])
    if inner is not None and inner.op == "transpose":
        composed = tuple(inner.attrs["perm"][p] for p in perm)
        return [rw.emit1("transpose", inner.inputs, perm=composed)]
    return None


def fold_constants(node: Node, rw: Rewriter):
    """An elementwise op whose inputs are all scalar constants becomes one constant."""
    if not node.inputs or not all(rw.is_constant(v) for v in node.inputs):
        return None
    values = [torch.tensor(rw.constant_value(v), dtype=torch.float64) for v in node.inputs]
    result = OPS[node.op].reference(*values, **node.attrs)
    (out,) = node.outputs
    return [rw.emit1("constant", [], value=float(result), dtype=out.dtype)]


def _neutral(value, neutral) -> bool:
    return value is not None and value == neutral


def drop_neutral_operand(node: Node, rw: Rewriter):
    """x + 0, x - 0, x * 1, x / 1 -> x when x already has the result's shape and dtype."""
    a, b = node.inputs
    out = node.outputs[0]
    neutral = {"add": 0.0, "sub": 0.0, "mul": 1.0, "div": 1.0}[node.op]
    if _neutral(rw.constant_value(b), neutral) and a.spec == out.spec:
        return [a]
    if node.op in ("add", "mul") and _neutral(rw.constant_value(a), neutral) and b.spec == out.spec:
        return [b]
    return None


def shape_from_an_input(node: Node, rw: Rewriter):
    """broadcast_like / count read only a shape: take it from a graph input of the same
    shape (and dtype, which count's result takes) when there is one, so the op neither
    waits for nor keeps alive the value it was given (the loss values, in a training step)."""
    (i,) = SHAPE_ONLY_INPUTS[node.op]
    given = node.inputs[i]
    if any(v.id == given.id for v in rw.graph.inputs):
        return None
    donor = next((v for v in rw.graph.inputs if v.shape == given.shape and v.dtype == given.dtype), None)
    if donor is None:
        return None
    inputs = [donor if j == i else v for j, v in enumerate(node.inputs)]
    return rw.emit(node.op, inputs, **node.attrs)


def shift_after_views(node: Node, rw: Rewriter):
    """A view (transpose, or a reshape merging a shift's axis with the axes before it into its first:
    an RNN's (batch, time, units) into (batch*time, units)) of a shift read by nothing else -> the
    shift of the view: the same elements. Moved after the views, the shift is what a matmul reads,
    and the matmul reads its operand shifted (kernels/matmul.py) instead of a torch op writing it."""
    inner = rw.producer_of(node.inputs[0])
    if inner is None or inner.op != "shift" or rw.uses[node.inputs[0].id] != 1:
        return None
    x, a = inner.inputs[0], inner.attrs
    axis = a["axis"] % x.rank
    if node.op == "transpose":
        perm = node.attrs["perm"]
        view, axis = rw.emit1("transpose", [x], perm=perm), perm.index(axis)
    else:
        shape = tuple(node.attrs["shape"])
        if len(shape) != x.rank - axis or shape[1:] != x.shape[axis + 1:]:
            return None  # within a run of `period`, a merged index counts the shift's axis alone
        view, axis = rw.emit1("reshape", [x], shape=shape), 0
    return [rw.emit1("shift", [view], axis=axis, period=a["period"], by=a["by"])]


RULES = [
    ("dropout", identity_dropout),
    ("linear", identity_linear),
    ("cast", same_type_cast),
    ("replica_sum", one_process_replica_sum),
    ("reshape", merge_reshapes),
    ("transpose", merge_transposes),
    ("reshape", shift_after_views),
    ("transpose", shift_after_views),
    *[(name, fold_constants) for name, op in OPS.items() if "elementwise" in op.traits and "random" not in op.traits],
    *[(name, drop_neutral_operand) for name in ("add", "sub", "mul", "div")],
    *[(name, shape_from_an_input) for name in SHAPE_ONLY_INPUTS],
    *PAD_INTO_CONV_RULES,
]


def common_subexpressions(graph: Graph) -> Graph:
    """Nodes with the same op, inputs and attributes compute the same value: keep the first."""
    seen: dict[tuple, Node] = {}
    same_as: dict[int, Value] = {}
    nodes = []
    for node in graph.nodes:
        inputs = tuple(same_as.get(v.id, v) for v in node.inputs)
        node = Node(node.op, inputs, node.attr_items, node.outputs, node.origin)
        key = (node.op, tuple(v.id for v in inputs), node.attr_items)
        if "random" in OPS[node.op].traits and node.attrs.get("training"):
            nodes.append(node)  # two dropout masks are two draws
            continue
        first = seen.get(key)
        if first is None:
            seen[key] = node
            nodes.append(node)
        else:
            same_as.update({old.id: new for old, new in zip(node.outputs, first.outputs)})
    outputs = tuple(same_as.get(v.id, v) for v in graph.outputs)
    return replace(graph, nodes=tuple(nodes), outputs=outputs)


def simplify(graph: Graph) -> Graph:
    graph = rewrite_to_fixpoint(graph, RULES)
    return dead_code_elimination(common_subexpressions(graph))
