"""The cost model's launches (kcomp/ir/cost.py) against what a plan runs (kcomp/runtime/plan.py):
views and shape-only results launch nothing, a reshape torch must copy is one launch."""

import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.cost import copies, graph_cost, launched
from kcomp.passes.fuse import launches
from kcomp.runtime.plan import SHAPE_ONLY_RESULTS, Plan


def _sliced_graph():
    """x[:, 1:4] read as it is (a view) and merged into rows (a copy), and a count (made once)."""
    b = GraphBuilder("sliced")
    x = b.input((None, 5, 7), "float32", "x")
    part = b.emit1("slice", [x], axis=1, start=1, stop=4)
    rows = b.emit1("reshape", [part], shape=("N*3", 7))
    last = b.emit1("reshape", [b.emit1("slice", [x], axis=1, start=4, stop=5)], shape=("N", 7))  # drops an axis: a view
    n = b.emit1("count", [x], axes=(0,))
    return b.finish([b.emit1("tanh", [rows]), b.emit1("exponential", [last]), b.emit1("neg", [n])])


def test_slices_and_counts_launch_nothing_and_a_copying_reshape_launches_once():
    graph = _sliced_graph()
    (copy,) = [n for n in graph.nodes if id(n) in copies(graph)]
    assert copy.outputs[0].shape == ("N*3", 7)
    assert sorted(n.op for n in launched(graph)) == ["exponential", "neg", "reshape", "tanh"]
    count, _, moved = graph_cost(graph, {"N": 2})
    assert count == launches(graph) == 4
    # the copy and tanh each read and write 2 * 3 * 7 floats, exp 2 * 7, neg a scalar; the views nothing
    assert moved == 4 * (2 * (2 * 3 * 7) * 2 + 2 * (2 * 7) + 2)


def test_the_cost_model_counts_what_the_plan_launches():
    """Counted: every node the plan runs but as a view or a result made once, and the reshape
    torch copies (the plan's view of a strided slice, which torch's reshape copies)."""
    graph = _sliced_graph()
    plan = Plan(graph)
    counted, copied = {id(n) for n in launched(graph)}, copies(graph)
    for instruction in plan.instructions:
        node = instruction.node
        runs = instruction.kind != "view" and node.op not in SHAPE_ONLY_RESULTS
        assert (id(node) in counted) == (runs or id(node) in copied), node.op
    x = torch.randn(2, 5, 7)
    assert x.narrow(1, 1, 3).reshape(6, 7).data_ptr() != x.narrow(1, 1, 3).data_ptr()  # torch copies
    assert x.narrow(1, 4, 1).reshape(2, 7).data_ptr() == x.narrow(1, 4, 1).data_ptr()  # a view
    got = plan.run([x], {})
    torch.testing.assert_close(got[0], torch.tanh(x[:, 1:4].reshape(6, 7)))
