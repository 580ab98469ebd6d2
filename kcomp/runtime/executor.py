"""Executors: what runs a model's forward graph for predict.

  "reference"         torch ops per IR node on the CPU (the oracle; the CPU default)
  "triton-interpret"  the fused graph's generated Triton kernels, on CPU tensors, under Triton's interpreter
  "triton"            the same kernels on a CUDA GPU; each batch shape's forward captured in a CUDA graph
  "auto"              "triton" where CUDA is available, else "reference"
"""

import sys

import torch

from kcomp.errors import ArgumentError, KcompError
from kcomp.ir.graph import Graph
from kcomp.runtime.reference import ReferenceRun
from kcomp.runtime.triton_mode import require_compiler, require_interpreter
from kcomp.runtime.versions import contents_key

BACKENDS = ("auto", "triton", "triton-interpret", "reference")
PRECISIONS = ("tf32", "ieee")


def resolve_backend(backend: str, announce: bool = True) -> str:
    if backend not in BACKENDS:
        raise ArgumentError(f"Received: backend={backend!r}. Expected one of {list(BACKENDS)}.")
    if backend != "auto":
        return backend
    chosen = "triton" if torch.cuda.is_available() else "reference"
    if announce:
        why = "a CUDA device is available" if chosen == "triton" else "no CUDA device: the torch reference executor"
        print(f"kcomp: backend='auto' -> {chosen!r} ({why})", file=sys.stderr)
    return chosen


class ReferenceExecutor:
    name = "reference"
    device = torch.device("cpu")

    def __init__(self, graph: Graph):
        self.graph = graph
        self._run = ReferenceRun(graph)  # scheduled once, run every batch

    def run(self, inputs, params):
        return self._run(inputs, params)


class PlanExecutor:
    """Runs the fused plan; on CUDA, replays one captured CUDA graph per batch shape."""

    def __init__(self, graph: Graph, backend: str, precision: str = "tf32"):
        from kcomp.passes import run_pipeline
        from kcomp.runtime.plan import Plan

        if precision not in PRECISIONS:
            raise ArgumentError(f"Received: precision={precision!r}. Expected one of {list(PRECISIONS)}.")
        check_backend(backend, graph)
        self.device = torch.device("cpu" if backend == "triton-interpret" else "cuda")
        self.name = backend
        fused, _ = run_pipeline(graph)
        self.plan = Plan(fused, precision)
        self._graphs: dict[tuple, object] = {}  # batch shape -> CapturedForward
        self._params_key: tuple | None = None  # what the device copies in _params were made from
        self._params: dict = {}

    def _device_params(self, params):
        """Weights on the executor's device; copied again (and captures dropped) when they change."""
        key = (tuple(params), contents_key(params.values()))
        if key != self._params_key:
            # Outside inference mode (predict runs in it): an inference tensor has no version
            # counter, and the plan keys its weight-only values by these copies' versions.
            with torch.inference_mode(False):
                self._params = {k: v.to(self.device) for k, v in params.items()}
            self._params_key = key
            self._graphs.clear()  # a captured graph reads the old weight buffers
        return self._params

    def run(self, inputs, params):
        params = self._device_params(params)
        inputs = [t.to(self.device) for t in inputs]
        from kcomp.runtime import cuda_graphs

        graphs = cuda_graphs.graphs_for(self.device)
        if graphs is None:
            return self.plan.run(inputs, params)
        key = tuple((tuple(t.shape), t.dtype) for t in inputs)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._graphs[key] = cuda_graphs.CapturedForward(self.plan, inputs, params, graphs)
        return captured.replay(inputs)


def check_backend(backend: str, graph: Graph) -> None:
    """Refuse, with the reason, a backend this process or this model cannot use (before any work)."""
    if backend == "triton-interpret":
        require_interpreter()
        if any(v.dtype == "bfloat16" for v in (*graph.inputs, *graph.params)):
            raise KcompError(
                "backend='triton-interpret' cannot run bfloat16 models: Triton's interpreter computes "
                "bfloat16 wrongly (measured: relative error ~1e9 on tl.dot). Use float32 or float16 on the "
                "CPU, or the 'triton' backend on a GPU; `kcomp build --dtype bfloat16` checks the bfloat16 kernels."
            )
    elif backend == "triton":
        if not torch.cuda.is_available():
            raise KcompError("backend='triton' needs a CUDA GPU and none is available; use backend='auto' or 'reference'.")
        require_compiler()


def make_executor(graph: Graph, backend: str, precision: str = "tf32"):
    backend = resolve_backend(backend)
    if backend == "reference":
        return ReferenceExecutor(graph)
    return PlanExecutor(graph, backend, precision)
