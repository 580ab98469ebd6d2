"""`kcomp build`: from a model to IR dumps, generated kernels, PTX/cubin and a report.

Everything here runs without a GPU: passes, code generation, and ahead-of-time
compilation for a chosen target through Triton's compiler.
"""

import functools
import json
import numbers
import time
from dataclasses import dataclass, field
from pathlib import Path

from kcomp.codegen.module import describe, kernel_source
from kcomp import config
from kcomp.errors import ArgumentError
from kcomp.ir.cost import graph_cost, node_bytes, node_flops
from kcomp.ir.graph import Graph
from kcomp.passes import run_pipeline
from kcomp.passes.precision import convert_dtype
from kcomp.runtime.plan import VIEW_OPS, Schedule
from kcomp.support.files import write_text_atomic
from kcomp_launch import COMPILED_EMITS  # what a build compiles its kernels for; the launcher, run before kcomp, reads it too

TARGETS = ("sm_80", "sm_89", "sm_90")
DTYPES = ("float32", "bfloat16")
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "bfloat16", "float16")
EMITS = ("ir", "triton", "ptx", "cubin", "sass")
DEFAULT_EMITS = ("ir", "triton", "ptx", "cubin")  # sass only when asked: disassembling is ~40% of a cold build
MAX_BATCH = 2**31 - 1  # kernels take sizes as 32-bit integers
# The most memory the trial run and the AOT example tensors may need at the build's batch (both
# allocate on the CPU): far beyond it, a build would fail allocating or run for hours.
MAX_EXAMPLE_BYTES = 16 * 2**30


@dataclass
class BuildOptions:
    target: str = "sm_90"
    dtype: str = "float32"
    emit: tuple = DEFAULT_EMITS
    batch: int = 128
    precision: str = "tf32"
    train: bool = False  # build the training step (forward, loss, backward, update) instead of the forward
    jobs: int | None = None  # worker processes compiling kernels; None: config.build_jobs()
    trial: bool = True  # run the fused forward once on the reference executor (report.trial_run)
    # The Keras dtype policy the model was built under ("mixed_bfloat16": 16-bit compute, float32
    # weights); its graph already has its dtypes, so `dtype` converts nothing then.
    policy: str | None = None

    def job_count(self) -> int:
        """The processes compiling kernels: `jobs`, else config.build_jobs()."""
        return self.jobs or config.build_jobs()

    def check(self) -> None:
        if self.target not in TARGETS:
            raise ArgumentError(f"Received: target={self.target!r}. Expected one of {list(TARGETS)}.")
        if self.dtype not in DTYPES:
            raise ArgumentError(f"Received: dtype={self.dtype!r}. Expected one of {list(DTYPES)}.")
        if self.policy is not None and self.policy not in POLICIES:
            raise ArgumentError(f"Received: policy={self.policy!r}. Expected one of {list(POLICIES)}.")
        if self.precision not in ("tf32", "ieee"):
            raise ArgumentError(f"Received: precision={self.precision!r}. Expected 'tf32' or 'ieee'.")
        if isinstance(self.batch, bool) or not isinstance(self.batch, numbers.Integral) or not 0 < self.batch <= MAX_BATCH:
            raise ArgumentError(f"Received: batch={self.batch!r}. Expected a whole number from 1 to {MAX_BATCH}, e.g. 128.")
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, numbers.Integral) or self.jobs < 1):
            raise ArgumentError(f"Received: jobs={self.jobs!r}. Expected a whole number of worker processes, 1 or more, e.g. 4.")
        if self.jobs is None:
            config.build_jobs()  # a bad KCOMP_BUILD_JOBS fails here, before the passes run
        if not self.emit:
            raise ArgumentError(f"Received: emit={self.emit!r}, nothing to write. Expected one or more of {list(EMITS)}.")
        unknown = [e for e in self.emit if e not in EMITS]
        if unknown:
            raise ArgumentError(f"Received: emit={','.join(self.emit)}. Unknown: {unknown}; expected a list of {list(EMITS)}.")


@dataclass
class Built:
    fused: Graph
    unfused: Graph
    passes: list[str]
    kernels: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def symbol_sizes(graph: Graph, batch: int) -> dict:
    """Sizes for the symbolic dims: the batch, and 8 for any other unknown length."""
    sizes = {}
    for v in graph.inputs:
        for axis, d in enumerate(v.shape):
            if isinstance(d, str):
                sizes[d] = batch if axis == 0 else 8
    return sizes


# Ops a plan runs on torch by design, not for want of a template: why, for the explain lines.
TORCH_BY_DESIGN = {"sort_ids": "torch.sort, stable: the gradient's order of addition"}


def explain(graph: Graph) -> str:
    """The fused graph in one line a step: what each kernel absorbed."""
    lines, kernels = [], 0
    weight_only = Schedule(graph).hoisted
    for node in graph.nodes:
        if node.op == "kernel":
            lines.append(f"{describe(node)} -> kernel {kernels} [{node.attrs['template']}]")
            kernels += 1
        elif node.outputs[0].id in weight_only:
            lines.append(f"{node.origin or '?'} ({node.op}) -> once per weight update (weights only)")
        elif node.op in VIEW_OPS:
            lines.append(f"{node.origin or '?'} ({node.op}) -> a view, no kernel")
        elif node.op in TORCH_BY_DESIGN:
            lines.append(f"{node.origin or '?'} ({node.op}) -> torch op in the plan ({TORCH_BY_DESIGN[node.op]})")
        elif node.op != "constant":
            lines.append(f"{node.origin or '?'} ({node.op}) -> unfused torch op (no template yet)")
    return "\n".join(lines) + "\n"


def train_step_graph(model) -> Graph:
    """The model's training step for targets of the shape its losses expect (sparse losses: class ids)."""
    from kcomp import losses
    from kcomp.training.loop import _require_compiled
    from kcomp.training.step import build_train_step

    compiled = _require_compiled(model)
    specs = []
    for out, loss in zip(model.outputs, compiled.losses):
        sparse = isinstance(loss, losses.SparseCategoricalCrossentropy)
        specs.append(((), "int32") if sparse else (tuple(out.shape[1:]), "float32"))
    return build_train_step(model, compiled, tuple(specs)).graph


def build_graphs(model, options: BuildOptions, ir_dir: Path | None) -> Built:
    start = time.perf_counter()
    graph = train_step_graph(model) if options.train else model.to_graph()
    if options.policy is None:  # a policy's model has its dtypes already
        graph = convert_dtype(graph, options.dtype)
    snapshots: dict = {}
    # The graph's kind picks the pipeline: a training step hoists nothing (its weights change every step).
    fused, passes = run_pipeline(graph, dump_dir=ir_dir, snapshots=snapshots)
    unfused = snapshots[passes[passes.index("fuse") - 1]]  # the graph just before fusion
    return Built(fused, unfused, passes, seconds={"passes": time.perf_counter() - start})


def example_bytes(built: Built, batch: int) -> int:
    """The memory the trial run needs at `batch`: the graph's inputs and its modeled peak of activations
    (kcomp build refuses a batch that needs more than MAX_EXAMPLE_BYTES)."""
    from kcomp.ir.cost import nbytes
    from kcomp.runtime.plan import modeled_peak_bytes

    sizes = symbol_sizes(built.fused, batch)
    return sum(nbytes(v, sizes) for v in built.fused.inputs) + modeled_peak_bytes(built.fused, sizes)


def _remove_stale_kernels(folder: Path) -> None:
    """Drop the kernel files an earlier build of this folder wrote (kernel_<i>.*), so that a
    smaller build does not leave kernels of another graph beside its own."""
    if folder.is_dir():
        for path in folder.glob("kernel_*.*"):
            path.unlink()


def kernel_entries(built: Built, options: BuildOptions, out: Path) -> None:
    """Generate each kernel's module (written if emit has 'triton'), with its cost."""
    sizes = symbol_sizes(built.fused, options.batch)
    _remove_stale_kernels(out / "kernels")
    index = 0
    for node in built.fused.nodes:
        if node.op != "kernel":
            continue
        source = kernel_source(node, index)
        entry = {
            "kernel": index,
            "name": source.name,
            "template": source.template,
            "absorbed": [f"{n.origin}: {n.op}" for n in node.attrs["body"].nodes if n.op != "constant"],
            "description": source.absorbed,
            "flops": node_flops(node, sizes),
            "bytes": node_bytes(node, sizes),
            "source_digest": source.digest,
        }
        if "triton" in options.emit:
            path = out / "kernels" / f"{source.name}.py"
            write_text_atomic(path, source.text)
            entry["file"] = str(path.relative_to(out))
        entry["_source"] = source
        entry["_node"] = node
        built.kernels.append(entry)
        index += 1


def cost_summary(built: Built, batch: int) -> dict:
    from kcomp.runtime.plan import modeled_peak_bytes

    sizes = symbol_sizes(built.fused, batch)
    before = graph_cost(built.unfused, sizes, Schedule(built.unfused).hoisted)
    after = graph_cost(built.fused, sizes, Schedule(built.fused).hoisted)
    return {
        "batch": batch,
        "launches_unfused": before[0],
        "launches_fused": after[0],
        "kernels_fused": len(built.kernels),
        "flops": after[1],
        "hbm_bytes_unfused": before[2],
        "hbm_bytes_fused": after[2],
        "peak_activation_bytes": modeled_peak_bytes(built.fused, sizes),
    }


def write_dot(graph: Graph, path: Path) -> Path | None:
    """The fused graph in Graphviz form; also an SVG when the `dot` program is installed."""
    import shutil
    import subprocess

    names = {v.id: v.name for v in graph.inputs}
    lines = ["digraph kcomp {", "  rankdir=TB; node [shape=box, fontname=monospace];"]
    for v in graph.inputs:
        lines.append(f'  v{v.id} [label="{v.name}\\n{list(v.shape)}", shape=ellipse];')
    kernels = 0
    params = {p.id for p in graph.params}
    for i, node in enumerate(graph.nodes):
        if node.op == "constant":
            continue
        if node.op == "kernel":
            label = f"kernel {kernels} [{node.attrs['template']}]\\n{describe(node)}"
            kernels += 1
            style = ', style=filled, fillcolor="#dbeafe"'
        else:
            label = f"{node.op}\\n{node.origin}"
            style = ""
        lines.append(f'  n{i} [label="{label}"{style}];')
        for v in node.outputs:
            names[v.id] = f"n{i}"
        for v in node.inputs:
            if v.id in params or v.id not in names:
                continue
            src = names[v.id] if names[v.id].startswith("n") else f"v{v.id}"
            lines.append(f'  {src} -> n{i} [label="{list(v.shape)}"];')
    lines.append("}")
    write_text_atomic(path, "\n".join(lines) + "\n")
    if shutil.which("dot"):
        svg = path.with_suffix(".svg")
        subprocess.run(["dot", "-Tsvg", str(path), "-o", str(svg)], check=False, capture_output=True)
        return svg if svg.exists() else None
    return None



@functools.cache
def _templates_digest() -> str:
    """The templates are part of what gets compiled. All of them are hashed: a generated kernel
    reaches several modules (its template's, the ones that template imports), and a map from
    template names to files had gone stale (conv2d_grad_filter lives in conv2d_grad.py). Read
    once per process, not once per kernel."""
    import hashlib
    from importlib import resources

    templates = resources.files("kcomp.kernels")
    modules = sorted((f for f in templates.iterdir() if f.name.endswith(".py")), key=lambda f: f.name)
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in modules)).hexdigest()[:12]


def _aot_cache_dir(entry: dict, options: BuildOptions) -> Path:
    import triton

    import kcomp

    key = (
        f"{entry['_compile_key']}-{_templates_digest()}-{options.target}-{options.precision}-b{options.batch}"
        f"-k{kcomp.__version__}-t{triton.__version__}"
    )
    return config.cache_dir() / "aot" / key


def _read_cached_kernel(files: list[Path]) -> dict | None:
    """A kernel's cached PTX, cubin, resources (and SASS, where files names it), each verified
    (kcomp.support.disk_cache); None when any of them is missing, damaged or unreadable, or the
    SASS is asked for and the resources lack its counts: the kernel is compiled again."""
    from kcomp.support.disk_cache import read_entry

    parts = [read_entry(f) for f in files]
    if any(part is None for part in parts):
        return None
    kernel = dict(zip(_CACHED_PARTS, parts))
    try:
        kernel["resources"] = resources = json.loads(kernel["resources"])
        for key in ("registers", "shared_bytes", "spill_bytes", "tensor_cores", "num_warps"):
            resources[key]
        if "sass" in kernel:
            resources["sass_tensor_cores"], resources["local_stores"]
    except (ValueError, TypeError, KeyError):
        return None
    return kernel


_CACHED_PARTS = ("ptx", "cubin", "resources", "sass")  # a kernel's cache files, in _cache_files's order


def _cache_files(entry: dict, options: BuildOptions) -> list[Path]:
    """The kernel's PTX, cubin and resources in the AOT cache, and its SASS when emit asks for it."""
    stem = f"{entry['template']}.{options.target}"  # not the kernel's name: kernels of the same code share an entry
    extensions = ("ptx", "cubin", "json", "sass") if "sass" in options.emit else ("ptx", "cubin", "json")
    return [_aot_cache_dir(entry, options) / f"{stem}.{ext}" for ext in extensions]


def _compile_missing(missing: list[dict], options: BuildOptions) -> list[dict]:
    """Compile the kernels the cache lacks, in parallel (options.jobs workers), and write their cache
    entries; where those cannot be written (another user's cache), the results are used from memory
    (disk_cache warns once). Kernels with the same cache files (the same source, target, precision
    and batch: compile_key's same code and launches) compile once. A progress line "compiling
    kernels 7/13" is drawn when stderr is a terminal."""
    from kcomp.runtime.aot.parallel import CompileJob, compile_jobs
    from kcomp.support.disk_cache import write_entry

    unique: dict[tuple, dict] = {}
    for entry in missing:
        unique.setdefault(tuple(_cache_files(entry, options)), entry)
    jobs = [CompileJob(e["_node"], e["kernel"], e["name"], e["template"], options.target, options.precision,
                       options.batch, sass="sass" in options.emit) for e in unique.values()]
    progress = _progress_bar(len(jobs), "compiling kernels")
    results = compile_jobs(jobs, options.job_count(), progress)
    kernels = {}
    for files, result in zip(unique, results):
        parts = [result["ptx"], result["cubin"], result["resources_json"], result.get("sass")][:len(files)]
        for path, data in zip(files, parts):
            if not write_entry(path, data):
                break
        kernels[files] = {**dict(zip(_CACHED_PARTS, parts)), "resources": json.loads(parts[2])}
    return [kernels[tuple(_cache_files(entry, options))] for entry in missing]


def _progress_bar(total: int, label: str):
    """on_done(n) drawing "label n/total" on stderr when it is a terminal; nothing in a pipe or CI log."""
    import sys

    from kcomp.utils.progbar import Progbar

    if total == 0 or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return lambda done: None
    bar = Progbar(total, stream=sys.stderr, label=label)
    bar.update(0, finalize=False)
    return bar.update


def compiles_kernels(options: BuildOptions) -> bool:
    """Whether a build with these options compiles its kernels (emits PTX, cubin or SASS)."""
    return bool(COMPILED_EMITS & set(options.emit))


def compile_ahead_of_time(built: Built, options: BuildOptions, out: Path) -> dict:
    """PTX and cubin of every kernel for options.target, with registers, shared memory and spills.

    Results are cached on disk by what decides the compiled code (aot.compile_key: the kernel's
    code without its names and comments, and its launches as specialised), the templates, target,
    precision, batch and the kcomp and Triton versions; kernels of one build with the same
    compile_key compile once (the report's "same_code", each such kernel's "same_code_as"). A
    cached kernel is copied, not compiled again, once its PTX, cubin and
    resources have each been checked against the size and digest written with them; a damaged
    entry is compiled again and replaced, never copied out. The kernels the cache lacks compile in
    parallel worker processes (options.jobs, else KCOMP_BUILD_JOBS, else one per core): the files
    and the report are those of a one-at-a-time build (options.jobs=1), and a failing kernel raises
    the same KcompError naming it.
    """
    from kcomp.runtime.aot import compile_key
    from kcomp.support.files import write_bytes_atomic

    start = time.perf_counter()
    first_of_key: dict[str, int] = {}
    for entry in built.kernels:
        entry["_compile_key"] = key = compile_key(entry["_node"], entry["kernel"], options.precision, options.batch)
        first = first_of_key.setdefault(key, entry["kernel"])
        if first != entry["kernel"]:
            entry["same_code_as"] = first  # compiles to kernel `first`'s PTX and cubin
    cached = {entry["kernel"]: _read_cached_kernel(_cache_files(entry, options)) for entry in built.kernels}
    missing = [entry for entry in built.kernels if cached[entry["kernel"]] is None]
    hits = {entry["kernel"] for entry in built.kernels} - {entry["kernel"] for entry in missing}
    for entry, kernel in zip(missing, _compile_missing(missing, options)):
        cached[entry["kernel"]] = kernel
    for entry in built.kernels:
        entry["cache_hit"] = entry["kernel"] in hits
        kernel = cached[entry["kernel"]]
        resources = kernel["resources"]
        entry.update(
            registers=resources["registers"], shared=resources["shared_bytes"], spills=resources["spill_bytes"],
            tensor_cores=resources["tensor_cores"], num_warps=resources["num_warps"],
        )
        if "sass" in options.emit:
            entry.update(sass_tensor_cores=resources["sass_tensor_cores"], local_stores=resources["local_stores"])
        stem = f"{entry['name']}.{options.target}"
        for ext in ("ptx", "cubin", "sass"):
            if ext in options.emit:
                write_bytes_atomic(out / "kernels" / f"{stem}.{ext}", kernel[ext])
    built.seconds["aot"] = time.perf_counter() - start
    compiled = len({entry["_compile_key"] for entry in missing})
    return {"target": options.target, "compiled": compiled, "cache_hits": len(hits), "same_code": len(missing) - compiled}
