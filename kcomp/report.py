"""The build report: what kcomp made of a model, as text for people and JSON for tools."""

import json
import time
from collections import Counter

import torch

from kcomp.errors import format_shape
from kcomp.ir.types import TORCH_DTYPES
from kcomp.runtime.reference import run_reference


def _concrete(shape, batch: int) -> tuple[int, ...]:
    # Unknown non-batch sizes (a free sequence length) are taken as 8 for the trial run.
    return tuple(batch if i == 0 else (d if isinstance(d, int) else 8) for i, d in enumerate(shape))


def trial_run(model, graph, batch: int) -> tuple[list[tuple], float]:
    """Run the graph once on random data of batch `batch`; returns output shapes and seconds."""
    gen = torch.Generator().manual_seed(0)
    inputs = []
    for v in graph.inputs:
        shape = _concrete(v.shape, batch)
        if v.dtype.startswith("int"):
            # Ids in the range every Embedding that reads them accepts.
            high = min((l.input_dim for l in model.layers if hasattr(l, "input_dim")), default=2)
            inputs.append(torch.randint(0, high, shape, generator=gen, dtype=TORCH_DTYPES[v.dtype]))
        else:
            inputs.append(torch.randn(shape, generator=gen).to(TORCH_DTYPES[v.dtype]))
    start = time.perf_counter()
    with torch.inference_mode():
        outs = run_reference(graph, inputs, model.params())
    return [tuple(o.shape) for o in outs], time.perf_counter() - start


def make_report(model, source: str, graph, passes: list[str], batch: int) -> dict:
    out_shapes, seconds = trial_run(model, graph, batch)
    trainable = sum(w.value.numel() for w in model.trainable_weights)
    total = sum(w.value.numel() for w in model.weights)
    return {
        "model": model.name,
        "source": source,
        "layers": [{"name": l.name, "type": type(l).__name__, "params": l.count_params()} for l in model.layers],
        "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
        "inputs": [{"name": t.call.layer.name, "shape": list(t.shape), "dtype": t.dtype} for t in model.inputs],
        "outputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in model.outputs],
        "ir": {"nodes": len(graph.nodes), "ops": dict(sorted(Counter(n.op for n in graph.nodes).items()))},
        "passes": passes,
        "trial_run": {"executor": "reference", "batch": batch, "output_shapes": [list(s) for s in out_shapes], "seconds": round(seconds, 6)},
    }


def format_report(report: dict) -> str:
    p = report["params"]
    ins = ", ".join(f"{i['name']} {format_shape(i['shape'])} {i['dtype']}" for i in report["inputs"])
    outs = ", ".join(format_shape(o["shape"]) for o in report["outputs"])
    ops = ", ".join(f"{op} x{n}" for op, n in report["ir"]["ops"].items())
    trial = report["trial_run"]
    lines = [
        f"model {report['model']} (from {report['source']})",
        f"  layers:  {len(report['layers'])}",
        f"  params:  {p['total']:,} ({p['trainable']:,} trainable, {p['non_trainable']:,} non-trainable)",
        f"  inputs:  {ins}",
        f"  outputs: {outs}",
        f"  IR:      {report['ir']['nodes']} nodes ({ops})",
        f"  passes:  {', '.join(report['passes'])}",
        f"  trial run on the {trial['executor']} executor at batch {trial['batch']}: output shapes "
        + ", ".join(str(tuple(s)) for s in trial["output_shapes"])
        + f" in {trial['seconds'] * 1000:.1f} ms",
    ]
    return "\n".join(lines) + "\n"


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"

