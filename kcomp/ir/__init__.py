"""The graph IR: values, nodes, graphs, the op registry, builder, verifier, printer."""

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.opdef import AttrSpec, OpDef
from kcomp.ir.printer import print_graph
from kcomp.ir.registry import OPS, get_op
from kcomp.ir.types import BATCH, DTYPES, TensorSpec
from kcomp.ir.verify import verify

__all__ = [
    "AttrSpec", "BATCH", "DTYPES", "Graph", "GraphBuilder", "Node", "OPS", "OpDef",
    "TensorSpec", "Value", "get_op", "print_graph", "verify",
]
