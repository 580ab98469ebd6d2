"""The pass pipeline: named Graph -> Graph functions, run in the order listed.

Each pass is pure. `run_pipeline` verifies the graph after every pass and,
when asked (or when KCOMP_DUMP=DIR is set), writes the IR before the first
pass and after each one, numbered, so a person can diff what every pass did.
"""

from pathlib import Path
from typing import Callable

from kcomp import config
from kcomp.ir.graph import Graph
from kcomp.ir.printer import print_graph
from kcomp.ir.verify import verify
from kcomp.passes.decompose import decompose
from kcomp.passes.fuse import fuse, fuse_every_step
from kcomp.passes.simplify import simplify
from kcomp.support.files import write_text_atomic

Pass = Callable[[Graph], Graph]

PIPELINE: list[tuple[str, Pass]] = [
    ("verify", verify),
    ("simplify", simplify),
    ("decompose", decompose),
    ("simplify-decomposed", simplify),
    ("fuse", fuse),
]
# For step graphs (graph.kind "step": training and test steps), whose plans hoist nothing.
STEP_PIPELINE: list[tuple[str, Pass]] = [*PIPELINE[:-1], ("fuse", fuse_every_step)]


def run_pipeline(graph: Graph, dump_dir: Path | None = None, passes=None, snapshots: dict | None = None) -> tuple[Graph, list[str]]:
    """Run every pass; returns the final graph and the names of the passes run.

    `snapshots`, when given, receives the graph after each pass by pass name. The passes are
    the graph kind's (PIPELINE, or STEP_PIPELINE for a step graph) unless `passes` names others.
    """
    dump_dir = dump_dir or config.dump_dir()
    if passes is None:
        passes = STEP_PIPELINE if graph.kind == "step" else PIPELINE
    if dump_dir is not None:
        write_text_atomic(Path(dump_dir) / "00-input.ir", print_graph(graph))
    ran = []
    for index, (name, run) in enumerate(passes, start=1):
        graph = verify(run(graph))
        ran.append(name)
        if snapshots is not None:
            snapshots[name] = graph
        if dump_dir is not None:
            write_text_atomic(Path(dump_dir) / f"{index:02d}-{name}.ir", print_graph(graph))
    return graph, ran
