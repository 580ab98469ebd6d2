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


# The trial run's batch at most: the batch is a symbol in the graph, so a small one checks what a
# large one would, and the VGG-style CNN's trial at batch 128 took 8.6 s of a 33 s build.
TRIAL_BATCH = 8


def trial_run(model, graph, batch: int) -> tuple[list[tuple], float]:
    """Run the (fused) graph once on random data on the reference executor; output shapes and seconds.

    What it guarantees: the fused graph runs end to end with the model's weights (every node's
    reference implementation accepts what fusion made of it) and gives outputs of the traced shapes.
    It is not the AOT compile and checks no kernel's numbers (the kernel tests do)."""
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
    weights = model.params()
    params = {p.name: weights[p.name].to(TORCH_DTYPES[p.dtype]) for p in graph.params}  # --dtype casts them
    start = time.perf_counter()
    with torch.inference_mode():
        outs = run_reference(graph, inputs, params)
    return [tuple(o.shape) for o in outs], time.perf_counter() - start


def make_report(model, source: str, built, options, costs: dict) -> dict:
    trial_batch = min(options.batch, TRIAL_BATCH)
    if options.train or not options.trial:  # a step's inputs are data, targets and optimizer state: no trial run
        out_shapes, seconds = [], 0.0
    else:
        out_shapes, seconds = trial_run(model, built.fused, trial_batch)
    trainable = sum(w.value.numel() for w in model.trainable_weights)
    total = sum(w.value.numel() for w in model.weights)
    graph = built.fused
    return {
        "model": model.name,
        "source": source,
        "target": options.target,
        "dtype": options.dtype,
        "policy": options.policy or "float32",
        "precision": options.precision,
        "graph": "training step" if options.train else "forward",
        "layers": [{"name": l.name, "type": type(l).__name__, "params": l.count_params()} for l in model.layers],
        "params": {"total": total, "trainable": trainable, "non_trainable": total - trainable},
        "inputs": [{"name": v.name, "shape": [d if isinstance(d, int) else None for d in v.shape], "dtype": v.dtype} for v in graph.inputs],
        "outputs": [{"shape": [d if isinstance(d, int) else None for d in v.shape], "dtype": v.dtype} for v in graph.outputs],
        "ir": {"nodes": len(built.unfused.nodes), "ops": dict(sorted(Counter(n.op for n in built.unfused.nodes).items()))},
        "fused_nodes": dict(sorted(Counter(n.attrs["template"] if n.op == "kernel" else n.op for n in graph.nodes).items())),
        "passes": built.passes,
        "kernels": [{k: v for k, v in entry.items() if not k.startswith("_")} for entry in built.kernels],
        "fusion": costs,
        "seconds": {k: round(v, 4) for k, v in built.seconds.items()},
        "trial_run": {"executor": "reference (fused graph)", "batch": trial_batch, "output_shapes": [list(s) for s in out_shapes], "seconds": round(seconds, 6)},
    }


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _instructions(counts: dict | None) -> str:
    return "-" if counts is None else (", ".join(f"{n} {op}" for op, n in counts.items()) or "none")


def _kernel_table(kernels: list[dict]) -> list[str]:
    if not kernels:
        return ["  (no kernels)"]
    sass = any("sass_tensor_cores" in k for k in kernels)  # kcomp build --emit sass
    rows = [("#", "template", "MFLOP", "bytes", "regs", "smem", "spills", "tensor cores (PTX)",
             *(("tensor cores (SASS)", "spill stores") if sass else ()), "absorbed")]
    for k in kernels:
        rows.append((
            str(k["kernel"]), k["template"], f"{k['flops'] / 1e6:.2f}", _size(k["bytes"]),
            str(k.get("registers", "-")), _size(k["shared"]) if "shared" in k else "-", str(k.get("spills", "-")),
            _instructions(k.get("tensor_cores")),
            *((_instructions(k.get("sass_tensor_cores")), str(k.get("local_stores", "-"))) if sass else ()),
            k["description"] + (f" (same code as kernel {k['same_code_as']})" if "same_code_as" in k else ""),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]


def format_report(report: dict) -> str:
    p, f = report["params"], report["fusion"]
    ins = ", ".join(f"{i['name']} {format_shape(i['shape'])} {i['dtype']}" for i in report["inputs"])
    outs = ", ".join(format_shape(o["shape"]) for o in report["outputs"])
    trial = report["trial_run"]
    lines = [
        f"{report['graph']} of {report['model']} (from {report['source']}), target {report['target']}, "
        f"{report['dtype'] if report.get('policy', 'float32') == 'float32' else 'policy ' + report['policy']}, "
        f"precision {report['precision']}",
        f"  layers:  {len(report['layers'])}; params {p['total']:,} ({p['trainable']:,} trainable, {p['non_trainable']:,} non-trainable)",
        f"  inputs:  {ins}",
        f"  outputs: {outs}",
        f"  passes:  {', '.join(report['passes'])}",
        f"  fusion:  {f['launches_unfused']} kernels unfused (one per op) -> {f['launches_fused']} launches "
        f"({f['kernels_fused']} generated kernels); modeled HBM traffic at batch {f['batch']}: "
        f"{_size(f['hbm_bytes_unfused'])} -> {_size(f['hbm_bytes_fused'])}; peak activation memory "
        f"{_size(f['peak_activation_bytes'])} (buffers reused by liveness)",
        "  kernels:",
        *_kernel_table(report["kernels"]),
    ]
    seconds = report["seconds"]
    aot = report.get("aot")
    timing = ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items())
    if aot:
        timing += f"; AOT: {aot['compiled']} compiled, {aot['cache_hits']} cache hits"
        if aot.get("same_code"):
            timing += f", {aot['same_code']} the same code as a kernel compiled"
    lines.append(f"  time:    {timing}")
    if trial["output_shapes"]:
        lines.append(
            f"  trial run ({trial['executor']}) at batch {trial['batch']}: output shapes "
            + ", ".join(str(tuple(s)) for s in trial["output_shapes"])
            + f" in {trial['seconds'] * 1000:.1f} ms"
        )
    return "\n".join(lines) + "\n"


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"
