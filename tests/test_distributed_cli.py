"""`kcomp fit model.k --nproc N`: the .k path trained data-parallel, started by torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = """model mlp {
  input(64)
  dense(16, activation=relu)
  dense(10, activation=softmax)

  compile {
    optimizer = adam(learning_rate=0.01)
    loss = categorical_crossentropy
    metrics = [accuracy]
  }
}
"""


def kcomp_fit(tmp_path, nproc: int) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), KCOMP_DIST_TIMEOUT="20", OMP_NUM_THREADS="1")
    weights = tmp_path / f"w{nproc}.npz"
    done = subprocess.run([sys.executable, "-m", "kcomp", "fit", tmp_path / "mlp.k", "--data", tmp_path / "train.npz",
                           "--epochs", "2", "--batch-size", "24", "--validation-split", "0.2", "--save-weights",
                           weights, "--nproc", str(nproc)], capture_output=True, text=True, env=env, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    return done, dict(np.load(weights))


@pytest.mark.slow  # two jobs: ~25 s on this machine
def test_fit_with_nproc_2_trains_as_one_process(tmp_path):
    from kcomp.datasets import digits

    (images, labels), _ = digits.load_data(test_split=0)
    x = (images[:157].reshape(157, 64) / 16).astype("float32")
    np.savez(tmp_path / "train.npz", x=x, y=np.eye(10, dtype="float32")[labels[:157]])
    (tmp_path / "mlp.k").write_text(MODEL)
    one, expected = kcomp_fit(tmp_path, 1)
    two, got = kcomp_fit(tmp_path, 2)
    assert two.stdout.count("Epoch 2/2") == 1 and two.stdout.count("saved weights to") == 1  # process 0 prints
    assert "val_accuracy" in two.stdout  # validation (evaluate) ran sharded too; its numbers: tests/test_distributed.py
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_nproc_is_taken_off_the_command_each_process_runs():
    from kcomp.distribution.launch import without_nproc

    assert without_nproc(["fit", "m.k", "--nproc", "3", "--epochs", "2"]) == ["fit", "m.k", "--epochs", "2"]
    assert without_nproc(["fit", "--nproc=3", "m.k"]) == ["fit", "m.k"]
