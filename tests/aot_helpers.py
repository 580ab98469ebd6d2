"""AOT compiles for the tests, run in a child process started without TRITON_INTERPRET.

pytest's process runs Triton in interpreter mode (tests/conftest.py), where
nothing can be compiled for a GPU; so a test starts this file as a script with a
job, and reads back JSON: `start(job).result()`, or several `start`s at once to
compile in parallel. The jobs:

    {"kind": "examples", "dtype": "bfloat16", "target": "sm_90", "batch": 128}
        every kernel node of every model in examples/*.k (and, in float32, of
        its training step), compiled where its template has a generator: one
        record per kernel (resources, or why not)
    {"kind": "checks", "folder": DIR}
        the rest: another target, precision="ieee", a pointwise kernel, the
        specialisation against triton.jit's own, write_artifacts into DIR
    {"kind": "nan"}
        the float min / max instructions in the PTX of kernels that must keep a NaN
    {"kind": "policy", "policy": "mixed_bfloat16", "target": "sm_90", "batch": 128}
        every kernel of every example's forward and training step made under that dtype policy
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


# --- the test side: start a child, read its answer ---------------------------------------------


class Child:
    def __init__(self, job: dict, env: dict, timeout: float):
        self.timeout = timeout
        self.out = Path(tempfile.mkstemp(prefix="kcomp-aot-", suffix=".json")[1])
        job = {**job, "result": str(self.out)}
        self.process = subprocess.Popen(
            [sys.executable, __file__, json.dumps(job)], env=env, cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def result(self):
        if not hasattr(self, "_result"):
            self._result = self._wait()
        return self._result

    def _wait(self):
        try:
            stdout, stderr = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
            raise RuntimeError(f"AOT child timed out after {self.timeout}s:\n{stderr[-4000:]}") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"AOT child failed (exit {self.process.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")
        try:
            return json.loads(self.out.read_text())
        finally:
            self.out.unlink()


def compiler_env(**extra) -> dict:
    """This process's environment without TRITON_INTERPRET, so the child's Triton compiles."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(extra)
    return env


def start(job: dict, timeout: float = 300, **env) -> Child:
    return Child(job, compiler_env(**env), timeout)


# --- the child side ----------------------------------------------------------------------------


def example_graphs(training: bool, policy: str | None = None):
    """(file stem, name, graph) of every example model: its forward, and with training=True also
    its training step (named "<model>:train") when its .k file has a compile section. `policy`:
    the Keras dtype policy the models are made under (None: the global one, float32)."""
    import kcomp.dsl
    from kcomp.cli import _compile_from_section, _global_policy
    from kcomp.compiler import train_step_graph

    for path in sorted(EXAMPLES.glob("*.k")):
        with _global_policy(policy):
            models = kcomp.dsl.load(path)
        for name, model in models.items():
            yield path.stem, name, model.to_graph()
            if training and getattr(getattr(model, "compile_config", None), "settings", None):
                with _global_policy(policy):
                    _compile_from_section(model, path)
                yield path.stem, f"{name}:train", train_step_graph(model)


def example_kernels(training: bool = True, policy: str | None = None):
    """(file stem, model name, index, kernel node) for every kernel node of every example graph."""
    from kcomp.passes import run_pipeline
    from kcomp.passes.pipeline import STEP_PIPELINE

    for stem, name, graph in example_graphs(training, policy):
        # A training step is fused as training runs it (nothing hoisted: STEP_PIPELINE).
        fused, _ = run_pipeline(graph, passes=STEP_PIPELINE if name.endswith(":train") else None)
        kernels = [n for n in fused.nodes if n.op == "kernel"]
        for index, node in enumerate(kernels):
            yield stem, name, index, node


def record(result) -> dict:
    """A compiled kernel's resources, with the SASS's counts beside the PTX's: tensor_cores (read from
    the PTX, as a build reports them), sass_tensor_cores and local_stores (STL, from the SASS)."""
    return {
        **result.resources(sass=True),
        "status": "compiled",
        "ptx_target": next((line.split()[-1] for line in result.ptx.splitlines() if line.startswith(".target")), None),
        "cubin_bytes": len(result.cubin),
    }


def assert_ptx_agrees_with_sass(r: dict) -> None:
    """The record's tensor-core counts read from the PTX are the SASS's, opcode by opcode."""
    assert r["tensor_cores"] == r["sass_tensor_cores"], (
        f"PTX says {r['tensor_cores']}, SASS {r['sass_tensor_cores']}: {r.get('name')} ({r.get('template')})")


def assert_ptx_counts_are_sass_counts(records: list[dict], target: str) -> None:
    """On every compiled example kernel, the tensor-core counts read from the PTX are the SASS's;
    the records cover both MMA forms of `target` (warp and, on sm_90, warpgroup) and kernels on none."""
    records = [r for r in records if r["status"] == "compiled"]
    assert len(records) >= 20 and {r["model"] for r in records} >= {"mlp_digits", "cnn_digits", "imdb_lstm"}
    warp, warpgroup = ("HMMA", "HMMA") if target == "sm_80" else ("HMMA", "HGMMA")
    on_tensor_cores = [r for r in records if r["sass_tensor_cores"]]
    assert any(warpgroup in r["sass_tensor_cores"] for r in on_tensor_cores)  # the comparison covers both forms
    assert any(warp in r["sass_tensor_cores"] for r in on_tensor_cores)
    assert any(not r["sass_tensor_cores"] for r in records)
    for r in records:
        assert_ptx_agrees_with_sass(r)


def graph_kernel_records(graph, target: str = "sm_90", **labels) -> list[dict]:
    """Each kernel of `graph`'s fused form compiled for `target` in this (non-interpreter)
    process, in graph order: one record per kernel, `labels` and its template first."""
    from kcomp.passes import run_pipeline
    from kcomp.runtime.aot import compile_node

    fused, _ = run_pipeline(graph)
    kernels = [n for n in fused.nodes if n.op == "kernel"]
    return [{**labels, "template": node.attrs["template"], **record(compile_node(node, index, target=target))}
            for index, node in enumerate(kernels)]


def job_examples(job: dict) -> list[dict]:
    from kcomp.runtime.aot import compile_node

    dtype = None if job["dtype"] == "float32" else job["dtype"]
    records = []
    # Training steps are compiled in float32 only (a bfloat16 build converts forward graphs).
    for stem, model, index, node in example_kernels(training=job["dtype"] == "float32"):
        key = {"file": stem, "model": model, "index": index, "template": node.attrs["template"], "dtype": job["dtype"]}
        try:
            result = compile_node(node, index, target=job["target"], batch=job["batch"], float_dtype=dtype)
        except Exception as e:  # reported per kernel, so one failure does not hide the others
            records.append({**key, "status": "error", "error": f"{type(e).__name__}: {e}"[-3000:]})
            continue
        records.append({**key, **record(result)})
    return records


def job_policy(job: dict) -> list[dict]:
    """Every kernel of every example's forward and training step made under a dtype policy
    (mixed_bfloat16: 16-bit compute, float32 weights), compiled as built: one record per kernel.
    job["models"], where given: only these graphs ("mlp_digits:train", ...)."""
    from kcomp.runtime.aot import compile_node

    records = []
    for stem, model, index, node in example_kernels(training=True, policy=job["policy"]):
        if "models" in job and model not in job["models"]:
            continue
        key = {"file": stem, "model": model, "index": index, "template": node.attrs["template"], "policy": job["policy"]}
        try:
            result = compile_node(node, index, target=job["target"], batch=job["batch"])
        except Exception as e:  # reported per kernel, so one failure does not hide the others
            records.append({**key, "status": "error", "error": f"{type(e).__name__}: {e}"[-3000:]})
            continue
        records.append({**key, **record(result)})
    return records


def _dense_kernel():
    """The one kernel node of Input(128) -> Dense(64, relu)."""
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential
    from kcomp.passes import run_pipeline

    model = Sequential([Input(shape=(128,)), Dense(64, activation="relu")])
    graph, _ = run_pipeline(model.to_graph())
    return next(n for n in graph.nodes if n.op == "kernel")


def _pointwise_kernel():
    from kcomp.layers import Activation, Add, Input
    from kcomp.models import Model
    from kcomp.passes import run_pipeline

    a, b = Input(shape=(37,)), Input(shape=(37,))
    model = Model([a, b], Activation("tanh")(Add()([a, b])))
    graph, _ = run_pipeline(model.to_graph())
    return next(n for n in graph.nodes if n.op == "kernel" and n.attrs["template"] == "pointwise")


def _triton_specialization(launch):
    """What triton.jit itself would pass to ASTSource for this launch (its binder and _pack_args)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    backend = make_backend(GPUTarget("cuda", 90, 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    _, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound, specialization, options)
    return signature, constexprs, attrs


def _attributed(attrs: dict) -> dict:
    """The arguments that have attributes: Triton 3.6 leaves most without any out of the dict,
    Triton 3.9 lists them with an empty list; both compile the same."""
    return {key: value for key, value in attrs.items() if value}


def job_checks(job: dict) -> dict:
    from kcomp.runtime import aot
    from kcomp.codegen.module import kernel_source
    from kcomp.runtime.aot.results import _ptxas_usage
    from kcomp.runtime.kernel_cache import load_kernel

    out = {}
    node = _dense_kernel()
    source = kernel_source(node, 0)
    inputs = aot.example_inputs(node, 128)
    out["sm_80"] = record(aot.compile_kernel(source, inputs, target="sm_80"))
    out["sm_90_ieee"] = record(aot.compile_kernel(source, inputs, target="sm_90", precision="ieee"))
    sm90 = aot.compile_kernel(source, inputs, target="sm_90")
    out["sm_90_tf32"] = record(sm90)
    out["written"] = [str(p) for p in aot.write_artifacts(sm90, job["folder"])]
    out["cubin_sha"] = hashlib.sha256(sm90.cubin).hexdigest()
    out["ptxas_fallback"] = _ptxas_usage(sm90.ptx, 90)

    # Our specialisation of the recorded launch is triton.jit's own.
    for name, node in [("matmul", node), ("pointwise", _pointwise_kernel())]:
        (launch,) = aot.record_launches(load_kernel(kernel_source(node, 0)), aot.example_inputs(node, 128))
        ours = aot.specialize(launch)[:3]
        theirs = _triton_specialization(launch)
        ours = (ours[0], {(launch.kernel.arg_names.index(k),): v for k, v in ours[1].items()}, _attributed(ours[2]))
        theirs = (theirs[0], theirs[1], _attributed(theirs[2]))
        out[f"same_specialization_{name}"] = [repr(x) for x in ours] == [repr(x) for x in theirs]
        if name == "pointwise":
            out["pointwise"] = record(aot.compile_kernel(kernel_source(node, 0), aot.example_inputs(node, 128)))
    return out


def _nan_keeping_graphs() -> dict:
    """One graph per template whose max / min / clip must keep a NaN (see kcomp/ir/lowering.py)."""
    from kcomp.ir.builder import GraphBuilder

    graphs = {}
    b = GraphBuilder("reduce_max")
    x = b.input((None, 9, 5), "float32", "x")
    graphs["reduce"] = b.finish([b.emit1("max", [x], axes=(1,), keepdims=False)])
    b = GraphBuilder("clips")
    x, y = b.input((None, 19), "float32", "x"), b.input((None, 19), "float32", "y")
    v = b.emit1("hard_sigmoid", [b.emit1("relu", [x], max_value=6.0)])
    graphs["pointwise"] = b.finish([b.emit1("minimum", [b.emit1("maximum", [v, y]), x])])
    b = GraphBuilder("max_pool")
    x = b.input((None, 9, 11, 5), "float32", "x")
    graphs["pool2d"] = b.finish([b.emit1("max_pool2d", [x], pool_size=(3, 3), strides=(2, 2), padding="same")])
    b = GraphBuilder("xent")
    p, labels = b.input((None, 10), "float32", "p"), b.input((None,), "int32", "labels")
    graphs["softmax_xent"] = b.finish([b.emit1("softmax_cross_entropy", [p, labels]),
                                       b.emit1("correct", [labels, p], kind="sparse_categorical")])
    return graphs


def job_nan(job: dict) -> dict:
    """The float min / max instructions in the sm_90 PTX of each NaN-keeping kernel."""
    import re

    from kcomp.runtime.aot import compile_node
    from kcomp.passes import run_pipeline

    out = {}
    for template, graph in _nan_keeping_graphs().items():
        fused, _ = run_pipeline(graph)
        (node,) = [n for n in fused.nodes if n.op == "kernel"]
        result = compile_node(node, 0, target="sm_90", batch=128)
        out[template] = {"template": node.attrs["template"],
                         "instructions": sorted(set(re.findall(r"\b(?:max|min)(?:\.NaN)?\.f32\b", result.ptx)))}
    return out


JOBS = {"examples": job_examples, "checks": job_checks, "nan": job_nan, "policy": job_policy}


def main() -> None:
    job = json.loads(sys.argv[1])
    result = JOBS[job["kind"]](job)
    Path(job["result"]).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()


def run_file_as_aot_child(test_file: str, cases, tmp_path, timeout: float = 300) -> list:
    """Run `python test_file CASES_JSON ANSWER_PATH` without TRITON_INTERPRET, so the test file's
    `__main__` block can AOT-compile `cases`; returns the records it wrote to ANSWER_PATH."""
    answer = Path(tmp_path) / "records.json"
    child = subprocess.run(
        [sys.executable, test_file, json.dumps(cases), str(answer)],
        capture_output=True, text=True, cwd=ROOT, env=compiler_env(KCOMP_CACHE_DIR=str(Path(tmp_path) / "cache")),
        timeout=timeout,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    return json.loads(answer.read_text())


def answer_aot_child(compile_cases, **options) -> None:
    """The child's side of run_file_as_aot_child, called from a test file's `__main__` block:
    compile_cases(CASES, **options)'s records written to ANSWER_PATH as JSON."""
    sys.path.insert(0, str(ROOT))
    Path(sys.argv[2]).write_text(json.dumps(compile_cases(json.loads(sys.argv[1]), **options), default=str))


def assert_compiled_without_spills(test_file: str, units_list, templates, tmp_path, timeout: float = 300) -> list:
    """run_file_as_aot_child(test_file, units_list): one record per (units, template) of
    templates(units), in order, each on tensor cores without spills or local stores; the records."""
    records = run_file_as_aot_child(test_file, units_list, tmp_path, timeout=timeout)
    assert [(r["units"], r["template"]) for r in records] == [(u, t) for u in units_list for t in templates(u)]
    for r in records:
        assert r["spill_bytes"] == 0 and r["local_stores"] == 0 and r["tensor_cores"], r
        assert_ptx_agrees_with_sass(r)
    return records
