"""A first-order cost model: FLOPs and HBM bytes of IR nodes and kernels.

Bytes are modeled as every input read once and the output written once, which
is what a kernel does when its tiles stay in cache; this is what fusion
changes, so comparing the fused plan with a one-kernel-per-op plan shows how
much memory traffic fusion removes. Launches are counted as a plan runs the graph
(kcomp/runtime/plan.py): views (reshape, transpose, slice) move nothing and launch nothing, nor
do results made once per shapes (a constant, a count); a reshape of a strided view that torch
must copy (merging a slice's or transpose's axes) is a launch that reads and writes its value.
"""

from math import prod

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.optim import get as algorithm_record
from kcomp.ir.types import TORCH_DTYPES, dim_parts, dim_size, is_static


# Ops a plan runs as torch views: no copy, no launch (a reshape of a strided view may copy: copies).
VIEW_OPS = ("reshape", "transpose", "slice")
# Ops whose result depends on their inputs' shapes alone (a constant; count, the batch size as a
# tensor): a plan makes each once per device and shapes, not once per run.
SHAPE_ONLY_RESULTS = ("constant", "count")


def _squeezed(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def copies(graph: Graph) -> set[int]:
    """Ids of the reshape nodes torch must copy: of a strided view (a slice's or a transpose's
    output), merging or splitting axes rather than only dropping or adding axes of size 1 (an
    LSTM's h sequence one step late, sliced, (N, T, U) -> (N*T, U))."""
    producers = graph.producers()
    return {id(n) for n in graph.nodes
            if n.op == "reshape" and (p := producers.get(n.inputs[0].id)) is not None and p.op in ("slice", "transpose")
            and _squeezed(n.inputs[0].shape) != _squeezed(n.outputs[0].shape)}


def launched(graph: Graph, skip: set[int] = frozenset()) -> list[Node]:
    """The nodes of `graph` a plan runs as a launch: kernels, torch ops and the reshapes torch
    copies; not views, shape-only results, nor `skip` (weight-only values, run once per update)."""
    copied = copies(graph)
    return [n for n in graph.nodes if n.outputs[0].id not in skip
            and (id(n) in copied or n.op not in (*VIEW_OPS, *SHAPE_ONLY_RESULTS))]


def dim(d, sizes: dict) -> int:
    """A dimension's size: static, or the size bound to its symbol (1 when unbound)."""
    if is_static(d) or d in sizes or dim_parts(d)[0] in sizes:
        return dim_size(d, sizes)
    return dim_parts(d)[1]


def numel(v: Value, sizes: dict) -> int:
    return prod(dim(d, sizes) for d in v.shape)


def nbytes(v: Value, sizes: dict) -> int:
    return numel(v, sizes) * TORCH_DTYPES[v.dtype].itemsize


def node_flops(node: Node, sizes: dict) -> int:
    out = node.outputs[0]
    n_out = numel(out, sizes)
    op = node.op
    if op == "kernel":
        return sum(node_flops(n, sizes) for n in node.attrs["body"].nodes)
    if op == "optimizer_update":
        # Per parameter element, as the algorithm's record counts it from its formulas (Adam: ~12).
        per_element = algorithm_record(node.attrs["algorithm"]).flops
        return per_element * sum(numel(p, sizes) for p in node.inputs[: node.attrs["count"]])
    if op == "matmul":
        return 2 * n_out * dim(node.inputs[0].shape[-1], sizes)  # the contracted size (the batch, in a weight gradient)
    if op == "conv2d":
        kh, kw, cin, _ = node.inputs[1].shape
        return 2 * n_out * kh * kw * cin
    if op == "conv2d_backprop_input":  # 2 * (N*H*W) * C * (KH*KW*F); taps a stride skips included
        kh, kw, _, filters = node.inputs[1].shape
        return 2 * n_out * kh * kw * filters
    if op == "conv2d_backprop_filter":  # 2 * (KH*KW*C) * F * (N*OH*OW): out is the kernel
        dy = node.inputs[1]
        return 2 * n_out * numel(dy, sizes) // dy.shape[-1]
    if op in ("max_pool2d", "avg_pool2d"):
        return n_out * prod(node.attrs["pool_size"])
    if op in ("max_pool2d_grad", "avg_pool2d_grad"):
        # Per input pixel, every window that can cover it; max recomputes each one's maximum.
        (ph, pw), (sh, sw) = node.attrs["pool_size"], node.attrs["strides"]
        windows = -(-ph // sh) * -(-pw // sw)
        return n_out * windows * (ph * pw if op == "max_pool2d_grad" else 1)
    if op in ("lstm", "gru", "simple_rnn"):
        x, kernel, recurrent = node.inputs[:3]
        steps = numel(x, sizes) // x.shape[-1]  # batch * timesteps
        return 2 * steps * (kernel.shape[0] + recurrent.shape[0]) * kernel.shape[1]
    if op in ("sum", "mean", "max"):
        return numel(node.inputs[0], sizes)
    if op in ("reshape", "constant", "embedding", "transpose", "concat", "cast", "slice", "pad", "shift", "flip"):
        return 0  # data movement only
    if op in ("softmax", "log_softmax"):
        return 5 * n_out
    if op in ("layer_norm", "batch_norm", "batch_norm_train"):
        return 8 * n_out
    return n_out  # elementwise: about one operation per element


def gathered_tables(node: Node) -> dict[int, Value]:
    """Input index -> the ids, for each input of `node` that is a table read only by row lookup
    (an embedding's, or a kernel whose body gathers through it: the embedding and gathering
    matmul templates): what is read of it is the rows the ids name, not the whole table."""
    if node.op == "embedding":
        return {1: node.inputs[0]}
    if node.op != "kernel":
        return {}
    body = node.attrs["body"]
    at = {v.id: i for i, v in enumerate(body.inputs)}
    lookups = [n for n in body.nodes if n.op == "embedding"]
    readers = {v.id for n in body.nodes if n.op != "embedding" for v in n.inputs}
    return {at[n.inputs[1].id]: node.inputs[at[n.inputs[0].id]] for n in lookups
            if n.inputs[1].id in at and n.inputs[0].id in at and n.inputs[1].id not in readers}


def node_bytes(node: Node, sizes: dict) -> int:
    if node.op in (*VIEW_OPS, "constant"):  # views: kernels read them through strides (a copy: graph_cost)
        return 0
    gathered = gathered_tables(node)
    reads, seen = 0, set()
    for i, v in enumerate(node.inputs):
        if v.id in seen:
            continue
        seen.add(v.id)
        if i in gathered:  # a row per id, at most the whole table
            row = nbytes(v, sizes) // max(dim(v.shape[0], sizes), 1)
            reads += min(nbytes(v, sizes), numel(gathered[i], sizes) * row)
        else:
            reads += nbytes(v, sizes)
    return reads + sum(nbytes(v, sizes) for v in node.outputs)


def graph_cost(graph: Graph, sizes: dict, skip: set[int] = frozenset()) -> tuple[int, int, int]:
    """(launches, flops, bytes) of running each node of `graph` as one kernel, as a plan runs them
    (launched); `skip`: weight-only values."""
    nodes, copied = launched(graph, skip), copies(graph)
    flops = sum(node_flops(n, sizes) for n in nodes)
    moved = sum(2 * nbytes(n.outputs[0], sizes) if id(n) in copied else node_bytes(n, sizes) for n in nodes)
    return len(nodes), flops, moved
