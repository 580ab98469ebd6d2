"""The reference executor: each IR node runs its registry torch implementation.

It is the oracle every compiled kernel is checked against, and the default on
a machine without a GPU. It is the IR's own interpreter (kcomp.ir.interpret).
"""

from kcomp.ir.interpret import run_graph

run_reference = run_graph
