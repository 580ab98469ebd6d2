"""`kcomp bench` (kcomp/bench): argument checks, the JSON of a tiny run, the equality check that
refuses to time a contender giving other results, and plots skipped cleanly without matplotlib.
Nothing here asserts a timing."""

import importlib.util
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kcomp.bench import compile_suite, contenders, models, report
from kcomp.bench.suite import Options
from kcomp.cli import main
from kcomp.errors import ArgumentError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kw, named", [
    ({"suite": "fast"}, "--suite='fast'"),
    ({"device": "tpu"}, "--device='tpu'"),
    ({"models": ["resnet50"]}, "--models='resnet50'"),
    ({"contenders": ["torch eager", "tensorflow"]}, "--contenders='tensorflow'"),
    ({"contenders": ["kcomp"]}, "--contenders=kcomp"),
    ({"repeats": 0}, "--repeats=0"),
    ({"steps": -2}, "--steps=-2"),
])
def test_bad_options_name_the_value(kw, named):
    with pytest.raises(ArgumentError, match="Received: " + named.replace("(", r"\(")):
        Options(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where there is no GPU")
def test_cuda_without_a_gpu_says_so(capsys):
    assert main(["bench", "--device", "cuda"]) == 1
    assert "Received: --device=cuda" in capsys.readouterr().err


def test_cli_bad_suite_is_one_error_line(capsys):
    assert main(["bench", "--suite", "everything"]) == 1
    err = capsys.readouterr().err
    assert "--suite='everything'" in err and "models, kernels, compile, all" in err and "Traceback" not in err


def test_tiny_run_json_schema(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["bench", "--suite", "models", "--quick", "--device", "cpu", "--models", "seed_mlp",
            "--contenders", "torch eager,kcomp,keras (torch),keras (jax)", "--repeats", "1", "--steps", "1", "--out", str(out)]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "kcomp-bench/1" and results["device"] == "cpu" and results["quick"] is True
    assert results["command"] == shlex.join(["kcomp", *argv])
    assert set(results["machine"]["versions"]) >= {"python", "torch", "kcomp", "keras", "jax", "triton"}
    (row,) = results["suites"]["models"]["rows"]
    assert (row["model"], row["batch"], row["input_shape"]) == ("seed_mlp", 32, [32, 100])
    assert list(row["contenders"]) == ["torch eager", "kcomp", "keras (torch)", "keras (jax)"]
    # Keras on JAX runs in a child process (Keras picks its backend once per process). Where Keras or
    # JAX is missing (the GPU machine's environment has neither) the contender says so, untimed.
    for name, needs in (("keras (torch)", ["keras"]), ("keras (jax)", ["keras", "jax"])):
        if any(importlib.util.find_spec(module) is None for module in needs):
            assert row["contenders"][name]["status"] == "not installed", row["contenders"][name]
            del row["contenders"][name]
    for entry in row["contenders"].values():
        assert entry["status"] == "timed", entry
        assert entry["train_steps_per_s"] > 0 and entry["predict_samples_per_s"] > 0
        assert len(entry["losses"]) == contenders.CHECKED_STEPS
    # Every contender started from the same weights: the first losses agree (Keras's and kcomp's exactly
    # the same computation as the torch loop's, up to float32 rounding).
    first = [e["losses"][0] for e in row["contenders"].values()]
    assert np.allclose(first, first[0], rtol=1e-5)
    assert set(row["kcomp_speedup"]) == set(row["contenders"]) - {"kcomp"}
    assert set(row["kcomp_speedup"]["torch eager"]) == {"train_steps_per_s", "predict_samples_per_s"}
    assert "seed MLP 100-64-10" in capsys.readouterr().out


def test_kernels_suite_on_cpu_measures_ceilings_and_lists_cases_as_needing_a_gpu():
    from kcomp.bench import kernel_suite

    needs_gpu = []
    result = kernel_suite.run(Options(suite="kernels", quick=True), needs_gpu)
    assert result["ceilings"]["copy_GBps"] > 0 and result["ceilings"]["matmul_TFLOPs"] > 0
    assert result["ceilings"]["matmul_bfloat16_TFLOPs"] > 0
    assert kernel_suite.matmul_ceiling(result["ceilings"], "bfloat16") == result["ceilings"]["matmul_bfloat16_TFLOPs"]
    assert kernel_suite.matmul_ceiling(result["ceilings"], "float32") == result["ceilings"]["matmul_TFLOPs"]
    assert result["rows"] and {r["status"] for r in result["rows"]} == {"needs a GPU"}
    assert any(line.startswith("kernels:") for line in needs_gpu)


def test_kernel_work_counts():
    from kcomp.bench.kernel_suite import work

    assert work("dense relu", "float32", [2, 3, 5]) == (60.0, 4.0 * (6 + 15 + 10))
    assert work("conv+bias+relu+maxpool", "bfloat16", [1, 4, 4, 2, 3]) == (2.0 * 16 * 2 * 3 * 9, 2.0 * (32 + 54 + 12))


def test_compile_suite_runs_the_build_script_when_there(tmp_path):
    opts = Options(suite="compile", quick=True)
    missing = compile_suite.run(opts, [], script=tmp_path / "bench_build.py")
    assert missing["status"] == "not yet"
    script = tmp_path / "fake_build.py"
    script.write_text("import sys; print('cold build', sys.argv[1:])\n")
    ran = compile_suite.run(opts, [], script=script)
    assert ran["status"] == "ran" and "cold build ['--quick']" in ran["output"]
    script.write_text("raise SystemExit(3)\n")
    assert compile_suite.run(opts, [], script=script)["status"] == "failed"


def test_the_build_benchmarks_torch_compile_step_runs(tmp_path, monkeypatch):
    """bench_build.py's torch.compile first step, with TorchDynamo off (torch.compile then runs the
    function as it is: seconds, not the minute a cold compile takes): the script's own code runs
    (it broke once on a changed helper, and the compile suite reported "failed")."""
    spec = importlib.util.spec_from_file_location("bench_build", ROOT / "bench" / "bench_build.py")
    bench_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_build)
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    assert bench_build.torch_compile_first_step(tmp_path) > 0


class _Off(contenders.TorchLoop):
    """The torch loop with one result wrong by `factor`; it must never be timed."""

    def __init__(self, *args, where, factor):
        super().__init__(*args)
        self.name, self.where, self.factor = "wrong", where, factor

    def predict(self):
        return super().predict() * (self.factor if self.where == "outputs" else 1.0)

    def train_losses(self, n):
        losses = super().train_losses(n)
        return losses[:1] + [v * self.factor for v in losses[1:]] if self.where == "update" else losses

    def train_block(self, steps):
        raise AssertionError("a contender whose results differ was timed")

    predict_block = train_block


@pytest.mark.parametrize("where, factor, named", [("outputs", 1.001, "predict output"), ("update", 1.05, "loss after one update")])
def test_a_contender_giving_other_results_is_refused_not_timed(where, factor, named):
    spec = models.MODELS["seed_mlp"]
    x, y = spec.data(8, True)
    weights = [np.random.default_rng(i).standard_normal(w.shape).astype("float32") * 0.1
               for i, w in enumerate([np.zeros((100, 64)), np.zeros(64), np.zeros((64, 10)), np.zeros(10)])]
    factories = {"torch eager": lambda: contenders.TorchLoop(spec, weights, x, y, "cpu"),
                 "wrong": lambda: _Off(spec, weights, x, y, "cpu", where=where, factor=factor),
                 "same": lambda: contenders.TorchLoop(spec, weights, x, y, "cpu")}
    entries, reference = contenders.measure(factories, batch=8, steps=1, repeats=1, device="cpu", rtol=1e-4, atol=1e-5)
    assert entries["wrong"]["status"] == "refused" and named in entries["wrong"]["reason"]
    assert "train_steps_per_s" not in entries["wrong"]
    assert entries["same"]["status"] == "timed" and entries["torch eager"]["status"] == "timed"
    assert reference["losses"] == entries["torch eager"]["losses"]


def test_a_contender_that_cannot_be_built_is_reported_and_the_others_still_run():
    spec = models.MODELS["seed_mlp"]
    x, y = spec.data(4, True)
    def missing():
        raise ImportError("No module named 'jax'")

    def broken():
        raise RuntimeError("boom")

    import kcomp.layers
    import kcomp.models

    weights = kcomp.models.Sequential(spec.layers(kcomp.layers, x.shape[1:])).get_weights()
    factories = {"torch eager": lambda: contenders.TorchLoop(spec, weights, x, y, "cpu"), "jax": missing, "broken": broken}
    entries, _ = contenders.measure(factories, batch=4, steps=1, repeats=1, device="cpu", rtol=1e-4, atol=1e-5)
    assert entries["jax"] == {"status": "not installed", "reason": "No module named 'jax'"}
    assert entries["broken"] == {"status": "failed", "reason": "RuntimeError: boom"}
    assert entries["torch eager"]["status"] == "timed"


def _results_with_speedups():
    return {"device": "cpu", "suites": {"models": {"rows": [
        {"title": "seed MLP", "kcomp_speedup": {"torch eager": {"train_steps_per_s": 1.5, "predict_samples_per_s": 0.8}}}]}}}


def test_plots_skipped_cleanly_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    written = report.write(_results_with_speedups(), tmp_path)
    assert written == [tmp_path / "results.json"] and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert report.NO_PLOTS in capsys.readouterr().out and "kcomp[plots]" in report.NO_PLOTS


def test_plots_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    written = report.write(_results_with_speedups(), tmp_path)
    assert [p.name for p in written] == ["results.json", "models_speedup.png"]
    assert (tmp_path / "models_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_cases_check_kcomp_against_eager_under_the_interpreter():
    """The cases the GPU run takes, at small ragged shapes, timing nothing (bench_kernels.py --rehearse)."""
    from kcomp.bench import kernel_suite

    runner = kernel_suite.Runner("cpu", "triton-interpret", bench=lambda fn: (fn(), None)[1], contenders=False)
    ran = [label for label, _, _, run in kernel_suite.cases(True, [(37, 23, 19)], [(3, 10, 10, 5, 6)], dtypes=("float32",))
           if run(runner) == {"kcomp": None, "eager": None, "torch.compile": None, "keras": None}]
    assert ran == ["dense relu", "dense gelu", "conv+bias+relu+maxpool"]


def test_a_kernel_contender_giving_other_results_is_refused_not_timed():
    from kcomp.bench import kernel_suite

    def never(fn):
        raise AssertionError("timed a contender whose result differs")

    ref = torch.randn(7, 5)
    runner = kernel_suite.Runner("cpu", "triton-interpret", bench=never)
    assert kernel_suite._checked(runner, lambda: ref * 1.1, ref, 1e-2).startswith("refused: differs from eager")


def test_kernel_cases_time_the_kernels_alone_too_and_report_a_capture_that_fails():
    """With graph_bench (CUDA graph replay on a GPU; faked here), each contender is timed a second time,
    and one that cannot be captured is reported with the reason instead of a time."""
    from kcomp.bench import kernel_suite

    def graph_bench(fn):
        fn()
        if fn.__name__ == "eager":
            raise RuntimeError("operation not permitted when stream is capturing")
        return 0.25

    runner = kernel_suite.Runner("cpu", "triton-interpret", bench=lambda fn: (fn(), 1.0)[1], contenders=False,
                                 graph_bench=graph_bench)
    (case,) = [run for label, _, _, run in kernel_suite.cases(True, [(37, 23, 19)], [], dtypes=("float32",)) if label == "dense relu"]
    times = case(runner)
    assert times["kcomp"] == 1.0 and times["graph"]["kcomp"] == 0.25
    assert times["graph"]["eager"].startswith("not captured: RuntimeError: operation not permitted")
    assert "torch.compile" not in times["graph"]  # not a contender in this run


def test_the_k_major_dense_case_reads_a_transposed_copy_of_the_kernel_and_checks_it():
    """'dense relu, W K-major' (float32, large shapes only) gives the kernel W through a transposed
    copy's strides; under the interpreter it must still match eager before anything is timed."""
    from kcomp.bench import kernel_suite

    runner = kernel_suite.Runner("cpu", "triton-interpret", bench=lambda fn: (fn(), None)[1], contenders=False)
    assert kernel_suite.dense_case(runner, 37, 23, 19, "relu", "float32", k_major=True)["kcomp"] is None
    labels = [(label, dtype) for label, dtype, _, _ in kernel_suite.cases(False, [(2048, 512, 2048), (128, 784, 512)], [(3, 10, 10, 5, 6)])]
    assert labels.count(("dense relu, W K-major", "float32")) == 1 and ("dense relu, W K-major", "bfloat16") not in labels


def test_a_timed_kernel_row_prints_its_fraction_of_its_dtypes_ceiling(capsys):
    """A GPU run's kernels table (made up here): a bfloat16 row's %mm is of the bfloat16 matmul ceiling."""
    results = {"device": "cuda", "quick": True, "needs_gpu": [], "machine": {"gpu": "GPU", "platform": "p", "cpu_threads": 16, "versions": {"torch": "t"}},
               "suites": {"kernels": {"ceilings": {"copy_GBps": 4000.0, "matmul_TFLOPs": 400.0, "matmul_bfloat16_TFLOPs": 800.0},
                                      "rows": [{"case": "dense relu", "dtype": "bfloat16", "shape": [8192, 8192, 8192], "status": "timed",
                                                "ms": {"kcomp": 2.0}, "kcomp_TFLOPs": 400.0, "fraction_of_matmul_ceiling": 0.5,
                                                "fraction_of_copy_ceiling": 0.01, "kcomp_speedup": {"eager": 0.9}}]}}}
    report.print_table(results)
    out = capsys.readouterr().out
    assert "800 TFLOP/s (bfloat16" in out and "   50 " in out and "eager 0.90x" in out


def test_print_profile_names_where_the_time_went(capsys):
    """bench_training.py and bench_recurrent.py --profile: torch.profiler's table, most time first."""
    from kcomp.bench.profiling import print_profile

    a = torch.randn(256, 256)
    print_profile("a matmul", lambda: [a @ a for _ in range(3)], "cpu")
    out = capsys.readouterr().out
    assert out.startswith("--- a matmul: by self_cpu_time_total") and "aten::mm" in out
