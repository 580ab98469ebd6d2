"""Weights files under faults (issue 11, part 4): a load is all-or-nothing, a save never leaves a
half-written file or a pile of temporaries, and a path that cannot be written fails before training."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kcomp
from kcomp.errors import KcompError
from kcomp.support import files


def small_model(units=3):
    inp = kcomp.Input((4,))
    model = kcomp.Model(inp, kcomp.layers.Dense(units)(inp))
    model.compile(optimizer="sgd", loss="mse", backend="reference")
    return model


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
def test_an_empty_or_foreign_file_is_refused_and_the_model_unchanged(tmp_path, suffix):
    model = small_model()
    before = model.get_weights()
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(KcompError, match="empty|cannot read|not an HDF5|signature"):
        model.load_weights(tmp_path / f"empty{suffix}")
    small_model(units=2).save_weights(tmp_path / f"other{suffix}")
    with pytest.raises(KcompError):
        model.load_weights(tmp_path / f"other{suffix}")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_extra_arrays_in_an_npz_are_named(tmp_path):
    model = small_model()
    arrays = {w.path: w.numpy() for w in model.weights}
    np.savez(tmp_path / "w.npz", **arrays, **{"stray/kernel": np.zeros(2)})
    with pytest.raises(KcompError, match="stray/kernel"):
        model.load_weights(tmp_path / "w.npz")


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    model = small_model()
    (tmp_path / "real").mkdir()
    link = tmp_path / "w.npz"
    link.symlink_to(tmp_path / "real" / "w.npz")
    model.save_weights(link)
    assert link.is_symlink() and (tmp_path / "real" / "w.npz").is_file()
    model.load_weights(link)


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        files.write_bytes_atomic(tmp_path / "new.bin", b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    finally:
        os.umask(old)
    os.chmod(tmp_path / "new.bin", 0o604)
    files.write_bytes_atomic(tmp_path / "new.bin", b"y")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o604


@pytest.mark.parametrize("make_bad_path", [
    lambda tmp: tmp,                                   # a folder as the path
    lambda tmp: (tmp / "afile").with_suffix(".txt") / "w.npz",  # a file where a folder should be
])
def test_unwritable_paths_fail_with_a_kcomp_error(tmp_path, make_bad_path):
    (tmp_path / "afile.txt").write_text("not a folder")
    with pytest.raises(KcompError, match="cannot write"):
        small_model().save_weights(make_bad_path(tmp_path))


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    model = small_model()
    model.save_weights(path)
    old = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(KcompError, match="No space left"):
        model.save_weights(path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


@pytest.mark.slow
def test_a_killed_save_leaves_no_temporary_after_the_next_save(tmp_path):
    """A process killed (SIGKILL) after writing its temporary but before the rename: the old file
    is whole, and the next save of that path removes the dead process's temporary."""
    path = tmp_path / "w.npz"
    small_model().save_weights(path)
    old = path.read_bytes()
    script = textwrap.dedent(f"""
        import os, sys, time
        import numpy as np
        from kcomp.support import files
        files.os.replace = lambda *a: (print("written", flush=True), time.sleep(600))
        files.write_bytes_atomic({str(path)!r}, np.random.bytes(1 << 20))
    """)
    leftovers = []
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "written"
        child.send_signal(signal.SIGKILL)
        child.wait()
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(leftovers) == 1  # each save removed the temporary of the process killed before it
    assert path.read_bytes() == old
    small_model().save_weights(path)
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    live = tmp_path / f".w.npz.{os.getppid()}.abc.tmp"  # the parent process is alive
    live.write_bytes(b"partial")
    files.write_bytes_atomic(tmp_path / "w.npz", b"new")
    assert live.exists()


def test_checkpoint_and_cli_paths_are_checked_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    model = small_model()
    x, y = np.ones((4, 4), "float32"), np.ones((4, 3), "float32")
    checkpoint = kcomp.callbacks.ModelCheckpoint(str(tmp_path / "afile" / "w-{epoch}.npz"), save_weights_only=True)
    with pytest.raises(KcompError, match="afile is a file"):
        model.fit(x, y, epochs=50, verbose=0, callbacks=[checkpoint])
    assert model.optimizer.iterations == 0  # refused before the first step


def test_kcomp_fit_checks_its_save_paths_before_training(tmp_path):
    (tmp_path / "afile").write_text("x")
    np.savez(tmp_path / "data.npz", x=np.ones((4, 64), "float32"), y=np.eye(10, dtype="float32")[np.arange(4)])
    run = subprocess.run(
        [sys.executable, "-m", "kcomp", "fit", "examples/mlp_digits.k", "--model", "mlp_digits", "--data",
         str(tmp_path / "data.npz"), "--epochs", "1", "--save-weights", str(tmp_path / "afile" / "w.npz")],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert run.returncode == 1 and "afile is a file" in run.stderr and "Epoch" not in run.stdout, run.stderr


def test_a_checkpoint_path_template_leaves_no_stray_folder(tmp_path):
    model = small_model()
    x, y = np.ones((4, 4), "float32"), np.ones((4, 3), "float32")
    template = str(tmp_path / "run" / "ep{epoch}" / "w.weights.h5")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[kcomp.callbacks.ModelCheckpoint(template, save_weights_only=True)])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["ep1", "ep2"]
