"""The kcomp command line, run as a user runs it (a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def kcomp(*args, cwd=None, env=None):
    # As a user runs it: without the interpreter mode this test process uses, so AOT can compile.
    clean = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-m", "kcomp", *map(str, args)], capture_output=True, text=True, cwd=cwd,
        env={**clean, **(env or {})}, timeout=300,
    )


@pytest.mark.parametrize("verb", ["build", "summary", "check", "fit", "evaluate", "convert", "data"])
def test_every_verb_has_help(verb):
    result = kcomp(verb, "--help")
    assert result.returncode == 0 and f"usage: kcomp {verb}" in result.stdout


def test_build_writes_ir_per_pass_and_report(tmp_path):
    result = kcomp("build", EXAMPLES / "mlp_digits.k", "--model", "seed_mlp", "--batch", 5, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "build" / "seed_mlp"
    from kcomp.passes import PIPELINE

    names = ["00-input.ir"] + [f"{i:02d}-{name}.ir" for i, (name, _) in enumerate(PIPELINE, start=1)]
    assert sorted(p.name for p in (out / "ir").iterdir()) == names
    assert (out / "model.ir").read_text().startswith("graph seed_mlp(")
    report = json.loads((out / "report.json").read_text())
    assert report["params"]["total"] == 7114
    assert report["trial_run"]["output_shapes"] == [[5, 10]]
    # Where the build's time went, in the order it ran.
    assert list(report["seconds"]) == ["load", "passes", "kernel sources", "aot"]
    assert all(s >= 0 for s in report["seconds"].values())
    assert "7,114" in result.stdout and "(None, 10)" in result.stdout
    assert (out / "report.txt").read_text() in result.stdout


def test_build_output_folder_and_dump_passes(tmp_path):
    result = kcomp("build", EXAMPLES / "residual.k", "-o", tmp_path / "out", "--dump-passes", "--emit", "ir,triton")
    assert result.returncode == 0, result.stderr
    assert "--- 00-input.ir" in result.stdout and "graph residual(" in result.stdout
    assert (tmp_path / "out" / "report.json").exists()


def test_kcomp_dump_environment_variable(tmp_path):
    result = kcomp("build", EXAMPLES / "cnn_digits.k", "-o", tmp_path / "out", "--emit", "ir", env={"KCOMP_DUMP": str(tmp_path / "dump")})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "ir" / "01-verify.ir").exists()


def test_build_a_python_model_file(tmp_path):
    result = kcomp("build", EXAMPLES / "residual.py", "-o", tmp_path / "out", "--emit", "ir")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"] == "residual"


def test_summary_and_check():
    summary = kcomp("summary", EXAMPLES / "imdb_lstm.k")
    assert summary.returncode == 0 and "328,353" in summary.stdout and "lstm (LSTM)" in summary.stdout
    check = kcomp("check", EXAMPLES / "mlp_digits.k")
    assert check.returncode == 0 and "mlp_digits, seed_mlp" in check.stdout


@pytest.mark.slow
def test_failed_build_exits_1_with_one_clear_message(tmp_path):
    bad = tmp_path / "bad.k"
    bad.write_text("model m {\n  input(10)\n  dens(4)\n}\n")
    for verb in ("build", "check", "summary"):
        result = kcomp(verb, bad, cwd=tmp_path)
        assert result.returncode == 1
        assert "bad.k:3:3: unknown layer 'dens'. Did you mean 'dense'?" in result.stderr
        assert "Traceback" not in result.stderr
    debug = kcomp("--debug", "check", bad)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_several_models_need_model_flag():
    result = kcomp("summary", EXAMPLES / "mlp_digits.k")
    assert result.returncode == 1 and "--model" in result.stderr
    result = kcomp("summary", EXAMPLES / "mlp_digits.k", "--model", "seed_mpl")
    assert result.returncode == 1 and "Did you mean 'seed_mlp'" in result.stderr


def test_bad_usage_exits_2(tmp_path):
    assert kcomp("build").returncode == 2
    assert kcomp("frobnicate").returncode == 2
    missing = kcomp("build", tmp_path / "missing.k")
    assert missing.returncode == 2 and "no such file" in missing.stderr


# Each: the flags after `kcomp build cnn_digits.k` ({file} is a plain file) and what the message says.
BUILD_USAGE_ERRORS = {
    "batch far too large": (["--batch", 10**12], "--batch 1000000000000 is out of range; give a batch size from 1 to"),
    "batch zero": (["--batch", 0], "--batch 0 is out of range"),
    "batch negative": (["--batch", -3], "--batch -3 is out of range"),
    "batch beyond memory": (["--batch", 10**8], "--batch 100000000 needs about"),  # an internal error (allocation) before
    "empty emit": (["--emit", ","], "--emit ',' names nothing to write; give a comma-separated list"),  # exit 0 before
    "blank emit": (["--emit", " "], "--emit ' ' names nothing to write"),
    "unknown emit": (["--emit", "ir,asm"], "Unknown: ['asm']"),  # sass is known: it disassembles
    "unknown target": (["--target", "sm_75"], "target='sm_75'. Expected one of"),
    "unknown dtype": (["--dtype", "float64"], "dtype='float64'. Expected one of"),
    "unknown precision": (["--precision", "fp16"], "precision='fp16'. Expected 'tf32' or 'ieee'"),
    "-o a file": (["-o", "{file}"], "is a file, not a folder; give -o a folder path"),
    "-o under a file": (["-o", "{file}/out/deeper"], "{file} is a file, not a folder; give -o a folder path"),  # exit 1 before
}


@pytest.mark.parametrize("case", BUILD_USAGE_ERRORS)
def test_build_usage_errors_exit_2_with_one_message(tmp_path, case):
    flags, message = BUILD_USAGE_ERRORS[case]
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    flags = [str(f).format(file=file) for f in flags]
    quick = [] if "--emit" in flags else ["--emit", "ir"]  # no AOT compile
    result = kcomp("build", EXAMPLES / "cnn_digits.k", *flags, *quick, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kcomp build: error: ") and message.format(file=file) in last, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert file.read_text() == "not a folder"


def test_convert_output_under_a_file_exits_2(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("not a folder")
    under = kcomp("convert", EXAMPLES / "residual.k", "-o", file / "m.k")
    assert under.returncode == 2 and f"{file} is a file, not a folder" in under.stderr, under.stderr
    (tmp_path / "dir.k").mkdir()
    folder = kcomp("convert", EXAMPLES / "residual.k", "-o", tmp_path / "dir.k")
    assert folder.returncode == 2 and "is a folder; give a .k file name inside it" in folder.stderr, folder.stderr


def test_python_file_errors_are_reported_not_crashes(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise ValueError('oops')\n")
    result = kcomp("check", script)
    assert result.returncode == 1 and "ValueError: oops" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_build_emits_kernels_ptx_cubin_and_a_kernel_report(tmp_path):
    env = {"KCOMP_CACHE_DIR": str(tmp_path / "cache")}
    result = kcomp("build", EXAMPLES / "cnn_digits.k", "-o", tmp_path / "out", "--batch", 64, "--explain", env=env)
    assert result.returncode == 0, result.stderr
    assert "conv2d (conv2d + bias_add + relu) + max_pooling2d (max_pool2d) -> kernel 0 [conv2d]" in result.stdout
    assert "flatten (reshape) -> a view, no kernel" in result.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    kernels = report["kernels"]
    assert [k["template"] for k in kernels] == ["conv2d", "conv2d", "matmul"]  # Dense + softmax: one kernel
    for k in kernels:
        assert k["registers"] > 0 and k["spills"] == 0 and k["flops"] > 0 and k["bytes"] > 0
        assert (tmp_path / "out" / "kernels" / f"{k['name']}.py").exists()
        assert (tmp_path / "out" / "kernels" / f"{k['name']}.sm_90.cubin").exists()
        if k["template"] in ("conv2d", "matmul"):
            assert k["tensor_cores"].get("HGMMA", 0) > 0  # tensor cores on sm_90
    fusion = report["fusion"]
    assert fusion["launches_unfused"] > fusion["launches_fused"] == 3
    assert fusion["hbm_bytes_fused"] < fusion["hbm_bytes_unfused"]
    assert report["aot"] == {"target": "sm_90", "compiled": 3, "cache_hits": 0, "same_code": 0}
    assert (tmp_path / "out" / "fused.dot").read_text().startswith("digraph kcomp")
    kcomp("build", EXAMPLES / "cnn_digits.k", "-o", tmp_path / "again", "--batch", 64, env=env)
    assert json.loads((tmp_path / "again" / "report.json").read_text())["aot"]["cache_hits"] == 3


def test_build_for_sm80_in_bfloat16(tmp_path):
    result = kcomp("build", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "-o", tmp_path / "out",
                   "--target", "sm_80", "--dtype", "bfloat16", "--emit", "ptx", "--batch", 128)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dtype"] == "bfloat16" and report["target"] == "sm_80"
    matmuls = [k for k in report["kernels"] if k["template"] == "matmul"]
    assert matmuls and all(k["tensor_cores"].get("HMMA", 0) > 0 for k in matmuls)
    ptx = (tmp_path / "out" / "kernels" / "kernel_0.sm_80.ptx").read_text()
    assert ".target sm_80" in ptx and ".bf16" in ptx
    assert not list((tmp_path / "out" / "kernels").glob("*.cubin"))  # only what --emit asked for


@pytest.mark.slow
def test_several_processes_building_the_same_model_share_the_cache(tmp_path):
    """Concurrent builds all succeed and leave whole cache entries (atomic writes)."""
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}, "KCOMP_CACHE_DIR": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kcomp", "build", str(EXAMPLES / "mlp_digits.k"), "--model", "seed_mlp",
             "-o", str(tmp_path / f"out{i}"), "--batch", "32"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    reports = [json.loads((tmp_path / f"out{i}" / "report.json").read_text()) for i in range(3)]
    assert all(r["kernels"][0]["registers"] == reports[0]["kernels"][0]["registers"] for r in reports)
    cached = list((tmp_path / "cache" / "aot").rglob("*.cubin"))
    assert len(cached) == 2 and all(p.stat().st_size > 0 for p in cached)  # two kernels: Dense+relu, Dense+softmax
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    kcomp_again = subprocess.run(
        [sys.executable, "-m", "kcomp", "build", str(EXAMPLES / "mlp_digits.k"), "--model", "seed_mlp",
         "-o", str(tmp_path / "out9"), "--batch", "32"], env=env, capture_output=True, text=True, timeout=300,
    )
    assert json.loads((tmp_path / "out9" / "report.json").read_text())["aot"]["cache_hits"] == 2, kcomp_again.stderr


@pytest.mark.slow
def test_fit_and_evaluate_from_the_compile_section(tmp_path):
    import numpy as np

    from kcomp.datasets import digits

    (images, labels), (test_images, test_labels) = digits.load_data(test_split=1 / 3)
    x, x_test = ((i.reshape(len(i), 64) / 16).astype("float32") for i in (images, test_images))
    np.savez(tmp_path / "train.npz", x=x, y=np.eye(10, dtype="float32")[labels])
    np.savez(tmp_path / "test.npz", x=x_test, y=np.eye(10, dtype="float32")[test_labels])
    weights = tmp_path / "w.npz"
    fit = kcomp("fit", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--data", tmp_path / "train.npz",
                "--epochs", 8, "--validation-split", 0.1, "--save-weights", weights)
    assert fit.returncode == 0, fit.stderr
    assert "Epoch 8/8" in fit.stdout and "val_accuracy" in fit.stdout and weights.exists()
    ev = kcomp("evaluate", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--data", tmp_path / "test.npz", "--weights", weights)
    assert ev.returncode == 0, ev.stderr
    accuracy = float(ev.stdout.split("accuracy: ")[1])
    assert accuracy > 0.8  # 8 epochs of the example's Adam(0.001): the CLI works; accuracy is tested elsewhere
    bad = kcomp("evaluate", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--data", tmp_path / "nope.npz")
    assert bad.returncode == 2
    np.savez(tmp_path / "wrong.npz", inputs=x)
    wrong = kcomp("fit", EXAMPLES / "mlp_digits.k", "--model", "mlp_digits", "--data", tmp_path / "wrong.npz")
    assert wrong.returncode == 1 and "expected 'x'" in wrong.stderr


@pytest.mark.slow
def test_build_train_emits_the_training_step_kernels(tmp_path):
    result = kcomp("build", EXAMPLES / "cnn_digits.k", "--train", "-o", tmp_path / "out", "--emit", "ir,triton", "--explain")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["graph"] == "training step"
    absorbed = " ".join(k["description"] for k in report["kernels"])
    assert "conv2d/grad" in absorbed and "dense/grad (matmul)" in absorbed  # backward kernels
    assert "optimizer (optimizer_update) -> kernel" in result.stdout  # every weight in one launch
    assert "(softmax_cross_entropy + correct) + loss/grad (softmax_cross_entropy_grad) -> kernel" in result.stdout
    # Building the (smaller) forward into the same folder leaves only its own kernels there.
    again = kcomp("build", EXAMPLES / "cnn_digits.k", "-o", tmp_path / "out", "--emit", "ir,triton")
    assert again.returncode == 0, again.stderr
    forward = json.loads((tmp_path / "out" / "report.json").read_text())["kernels"]
    assert sorted(p.name for p in (tmp_path / "out" / "kernels").glob("kernel_*.py")) == sorted(
        f"kernel_{k['kernel']}.py" for k in forward)
    no_section = tmp_path / "m.k"
    no_section.write_text("model m { input(3) dense(2) }")
    failed = kcomp("build", no_section, "--train", "-o", tmp_path / "o2", "--emit", "ir")
    assert failed.returncode == 1 and "compile section" in failed.stderr


def _trainable_examples():
    from kcomp import dsl

    return [(path.name, name) for path in sorted(EXAMPLES.glob("*.k"))
            for name, model in dsl.load(path).items() if model.compile_config.settings]


@pytest.mark.parametrize("file, model", _trainable_examples())
def test_build_train_compiles_every_training_step_kernel_for_the_gpu(tmp_path, file, model):
    """Each example with a compile section, its training step ahead of time for sm_90. The conv
    gradients' kernels (templates conv2d_grad_filter and conv2d_grad_input, both in
    kernels/conv2d_grad.py) had failed with a FileNotFoundError."""
    result = kcomp("build", EXAMPLES / file, "--model", model, "--train", "-o", tmp_path / "out", "--emit", "ptx,cubin")
    assert result.returncode == 0, result.stderr
    kernels = json.loads((tmp_path / "out" / "report.json").read_text())["kernels"]
    templates = {k["template"] for k in kernels}
    assert "optimizer" in templates
    if file == "cnn_digits.k":
        assert {"conv2d_grad_filter", "conv2d_grad_input"} <= templates
    for k in kernels:
        assert (tmp_path / "out" / "kernels" / f"{k['name']}.sm_90.cubin").stat().st_size > 0, k["name"]


@pytest.mark.parametrize("bad", [{"emit": ()}, {"batch": 0}, {"batch": 2**40}, {"batch": 2.5}, {"batch": True}])
def test_build_options_refuse_an_empty_emit_and_a_bad_batch(bad):
    from kcomp.compiler import BuildOptions
    from kcomp.errors import ArgumentError

    with pytest.raises(ArgumentError, match=f"Received: {next(iter(bad))}="):
        BuildOptions(**bad).check()


@pytest.mark.slow
def test_data_fit_evaluate_the_sentiment_example(tmp_path):
    """The imdb_lstm example as its header says to run it, on the synthetic IMDB set."""
    data = tmp_path / "imdb"
    made = kcomp("data", "imdb", "--synthetic", "--num-words", 10000, "--pad-to", 500, "-o", data)
    assert made.returncode == 0, made.stderr
    import numpy as np

    with np.load(data / "train.npz") as train:
        assert train["x"].shape == (2000, 500) and train["x"].dtype == np.int32 and train["x"].max() < 10000
        assert sorted(np.unique(train["y"])) == [0, 1]
    fit = kcomp("fit", EXAMPLES / "imdb_lstm.k", "--data", data / "train.npz", "--epochs", 3,
                "--validation-split", 0.2, "--save-weights", tmp_path / "w.npz")
    assert fit.returncode == 0, fit.stderr
    evaluate = kcomp("evaluate", EXAMPLES / "imdb_lstm.k", "--data", data / "test.npz", "--weights", tmp_path / "w.npz")
    assert evaluate.returncode == 0, evaluate.stderr
    accuracy = float(evaluate.stdout.split("accuracy: ")[1].split()[0])
    assert accuracy > 0.8, evaluate.stdout  # chance is 0.5 on the balanced set


def test_data_writes_digits_scaled_and_refuses_what_does_not_apply(tmp_path):
    made = kcomp("data", "digits", "--scale", 16, "--reshape", "8,8,1", "-o", tmp_path / "digits")
    assert made.returncode == 0, made.stderr
    import numpy as np

    with np.load(tmp_path / "digits" / "train.npz") as train, np.load(tmp_path / "digits" / "test.npz") as test:
        assert train["x"].dtype == np.float32 and 0 <= train["x"].min() and train["x"].max() == 1
        assert train["x"].shape[1:] == (8, 8, 1) and test["x"].shape[1:] == (8, 8, 1)
        assert len(train["x"]) + len(test["x"]) == 1797 and len(train["y"]) == len(train["x"])
    bad_shape = kcomp("data", "digits", "--reshape", "8,9", "-o", tmp_path / "other")
    assert bad_shape.returncode == 1 and "(8, 9)" in bad_shape.stderr and "64 values" in bad_shape.stderr
    wrong = kcomp("data", "digits", "--pad-to", 5, "-o", tmp_path / "other")
    assert wrong.returncode == 1 and "pad_to" in wrong.stderr and "imdb" in wrong.stderr
    assert not (tmp_path / "other" / "train.npz").exists()
    missing = kcomp("data", "mnist", "-o", tmp_path / "m", env={"KCOMP_DATA_DIR": str(tmp_path / "none"),
                                                               "KERAS_HOME": str(tmp_path / "none")})
    assert missing.returncode == 1 and "mnist.npz" in missing.stderr and "does not download" in missing.stderr
    (tmp_path / "file").write_text("")
    into_file = kcomp("data", "digits", "-o", tmp_path / "file")
    assert into_file.returncode == 2 and "is a file" in into_file.stderr


def test_build_explains_the_sentiment_training_step(tmp_path):
    """Issue 14's example: the training step's embedding, recurrence and dense kernels, forward and
    backward, each named in --explain (kernel compilation left out: tests/test_aot.py compiles them)."""
    result = kcomp("build", EXAMPLES / "imdb_lstm.k", "--train", "--explain", "--batch", 32, "--emit", "ir,triton",
                   "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("embedding (embedding) -> kernel", "lstm (matmul + bias_add) -> kernel", "lstm (lstm_scan) -> kernel",
                     "dense (matmul + bias_add + sigmoid) -> kernel", "lstm/grad (lstm_scan_grad) -> kernel",
                     "embedding/grad (embedding_grad_sorted) -> kernel", "optimizer (optimizer_update) -> kernel"):
        assert any(line.startswith(expected) for line in lines), expected
    kernels = {line.split("-> kernel ")[1].split()[0] for line in lines if "-> kernel " in line}
    assert len(kernels) >= 20  # 20 since binary cross-entropy fuses into 5 (tests/test_fusion_recompute.py)
    assert len(list((tmp_path / "out" / "kernels").glob("kernel_*.py"))) == len(kernels)  # each kernel a readable module
