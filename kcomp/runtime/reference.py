"""The reference executor: each IR node runs its registry torch implementation.

It is the oracle every compiled kernel is checked against, and the default on
a machine without a GPU. It is the IR's own interpreter (kcomp.ir.interpret), run
on a schedule that changes how the graph's values are computed, never what:

- only the nodes whose outputs reach the graph's outputs run (autodiff leaves, for
  one, the gradient of the input image that nothing reads);
- a pair of nodes listed in FUSIONS runs as one torch call where the graph has both, as
  PyTorch's eager loop calls it: a conv's two gradients from one convolution backward, a
  conv and its bias in one convolution, a gradient times a 0/1 mask in two passes, not three.
  On a CPU the passes over a CNN's activations these save are most of a step's time. A fused
  call computes the same function: the mask product bit for bit, the convolutions within
  rounding, as torch may sum in another order (tests/test_reference_fusions.py).
"""

import torch

from kcomp.ir.graph import Graph, Node
from kcomp.ir.interpret import run_steps
from kcomp.ir.ops.conv import conv2d_with_bias
from kcomp.ir.ops.conv_grad import conv2d_backprop_both
from kcomp.ir.registry import OPS
from kcomp.passes.rewrite import dead_code_elimination


def _geometry(node: Node, size_attr: str) -> dict:
    return {k: v for k, v in node.attrs.items() if k != size_attr}


def _conv_backprop_pair(first: Node, second: Node):
    """conv2d_backprop_input(dy, kernel) and conv2d_backprop_filter(x, dy) of the same dy and geometry:
    one convolution backward (conv2d_backprop_both) gives (dx, dkernel)."""
    dy, kernel = first.inputs
    x, dy2 = second.inputs
    geometry = _geometry(first, "input_size")
    if dy2.id != dy.id or geometry != _geometry(second, "kernel_size"):
        return None
    return conv2d_backprop_both, (dy, kernel, x), geometry, (*first.outputs, *second.outputs)


def _conv_bias_pair(first: Node, second: Node):
    """bias_add(conv2d(x, kernel), bias): torch's convolution adds the bias as it writes its output."""
    if second.inputs[0].id != first.output.id:
        return None
    return conv2d_with_bias, (*first.inputs, second.inputs[1]), first.attrs, second.outputs


def _mul_by_mask(g, a, b):
    """g * greater(a, b) in two passes where the ops take three: torch.gt writes its 1.0 and 0.0
    straight into a tensor of g's dtype (no boolean tensor to convert), which g then multiplies in
    place. The same products, NaN and inf included (0 * inf is NaN either way)."""
    mask = torch.empty_like(g)
    torch.gt(a, b, out=mask)
    return mask.mul_(g)


def _mask_mul_pair(first: Node, second: Node):
    """mul(g, greater(a, b)) or mul(greater(a, b), g): relu's and the other masks' gradients."""
    mask = first.output.id
    others = [v for v in second.inputs if v.id != mask]
    if len(others) != 1 or not (others[0].shape == first.output.shape == second.output.shape):
        return None  # a factor broadcasts (or the mask is both): left as it is
    return _mul_by_mask, (others[0], *first.inputs), {}, second.outputs


# (first op, second op, match): match(first node, a later node of the second op) gives the fused
# step (function, input values, attrs, output values), or None. The step runs at the second's
# place where nothing else reads the first's outputs, else at the first's where the second's
# inputs are all there; an output the step does not produce must be one nothing else reads.
FUSIONS = [
    ("conv2d_backprop_input", "conv2d_backprop_filter", _conv_backprop_pair),
    ("conv2d", "bias_add", _conv_bias_pair),
    ("greater", "mul", _mask_mul_pair),
]


def _place(nodes, i: int, j: int, step, readers: dict[int, set[int]], defined_at: dict[int, int], outputs):
    """Where fused `step` of nodes i < j can run (i or j), or None."""
    produced = {v.id for v in step[3]}
    for v in (*nodes[i].outputs, *nodes[j].outputs):
        if v.id not in produced and (v.id in outputs or readers.get(v.id, set()) - {i, j}):
            return None
    if all(readers.get(v.id, set()) <= {j} and v.id not in outputs for v in nodes[i].outputs):
        return j
    if all(defined_at.get(v.id, -1) < i for v in nodes[j].inputs):
        return i
    return None


def schedule(graph: Graph) -> list[tuple]:
    """The (function, input values, attrs, output values) steps that compute `graph`'s outputs."""
    nodes = list(dead_code_elimination(graph).nodes)
    defined_at = {v.id: i for i, node in enumerate(nodes) for v in node.outputs}  # graph inputs: absent, so -1
    readers: dict[int, set[int]] = {}
    for i, node in enumerate(nodes):
        for v in node.inputs:
            readers.setdefault(v.id, set()).add(i)
    outputs = {v.id for v in graph.outputs}
    fused: dict[int, tuple] = {}  # place -> fused step
    taken: set[int] = set()  # indices of the nodes a fused step computes
    for first_op, second_op, match in FUSIONS:
        for i, first in enumerate(nodes):
            if first.op != first_op or i in taken:
                continue
            for j in range(i + 1, len(nodes)):
                if nodes[j].op != second_op or j in taken:
                    continue
                step = match(first, nodes[j])
                place = None if step is None else _place(nodes, i, j, step, readers, defined_at, outputs)
                if place is not None:
                    fused[place] = step
                    taken.update((i, j))
                    break
    return [fused[i] if i in fused else (OPS[node.op].reference, node.inputs, node.attrs, node.outputs)
            for i, node in enumerate(nodes) if i in fused or i not in taken]


def releases(graph: Graph, steps) -> list[list[int]]:
    """Per step, the values that die there: read last by it (or, read by nothing, made by it) and
    not a graph output. A run that drops them frees each activation and gradient as soon as it is
    dead, as PyTorch's autograd does, rather than at the step's end: a smaller heap, fewer fresh
    pages for the allocator to fault in at the next step."""
    last: dict[int, int] = {}
    for k, (_, ins, _, outs) in enumerate(steps):
        for v in (*ins, *outs):
            last[v.id] = k
    for v in (*graph.inputs, *graph.params, *graph.outputs):
        last.pop(v.id, None)  # the caller's tensors and the results: never dropped
    dying: list[list[int]] = [[] for _ in steps]
    for vid, k in last.items():
        dying[k].append(vid)
    return dying


class ReferenceRun:
    """A graph and its schedule, made once: what a step or predict runs every batch."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.steps = schedule(graph)
        self.release = releases(graph, self.steps)

    def __call__(self, inputs, params):
        return run_steps(self.graph, self.steps, inputs, params, self.release)


def run_reference(graph: Graph, inputs, params):
    """Run `graph` once on the reference executor (a caller that runs it again keeps a ReferenceRun)."""
    return ReferenceRun(graph)(inputs, params)
