"""Autotuning's choice, skipping and caching, with the GPU timing faked (no GPU here)."""

import json
import os
import pathlib
from types import SimpleNamespace

import pytest
import torch
import triton.testing
from triton.runtime.errors import OutOfResources

from kcomp.kernels import autotune
from kcomp.support import disk_cache


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("KCOMP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_choices", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "FakeGPU")
    timings = {}

    def do_bench(fn, warmup, rep):
        fn()
        return timings[ran[-1]]

    ran = []
    monkeypatch.setattr(triton.testing, "do_bench", do_bench)
    return SimpleNamespace(out=SimpleNamespace(device=SimpleNamespace(type="cuda")), timings=timings, ran=ran, path=tmp_path / "autotune.json")


def test_the_fastest_launchable_config_is_kept_and_cached(fake_gpu):
    candidates = [{"B": 1}, {"B": 2}, {"B": 3}]
    fake_gpu.timings.update({1: 0.5, 3: 0.2})

    def run(config):
        fake_gpu.ran.append(config["B"])
        if config["B"] == 2:
            raise OutOfResources(300000, 232448, "shared memory")

    x = torch.ones(4, 8)
    assert autotune.choose_config("k", (x,), candidates, run, fake_gpu.out) == {"B": 3}
    assert fake_gpu.ran == [1, 2, 3]
    saved = autotune._read()
    assert list(saved.values()) == [{"B": 3}] and "FakeGPU|k|(4, 8)" in next(iter(saved))
    assert next(iter(saved)).endswith(f"|triton {triton.__version__}")  # another Triton tunes anew
    # Second time (and in a new process, from disk): no timing.
    fake_gpu.ran.clear()
    autotune._choices = None
    assert autotune.choose_config("k", (x,), candidates, run, fake_gpu.out) == {"B": 3}
    assert fake_gpu.ran == []
    # Another shape is tuned on its own.
    autotune.choose_config("k", (torch.ones(5, 8),), candidates, run, fake_gpu.out)
    assert fake_gpu.ran == [1, 2, 3]


def test_kcomp_autotune_0_takes_the_first_candidate_on_a_gpu_without_timing_or_saving(fake_gpu, monkeypatch):
    from kcomp.errors import KcompError

    monkeypatch.setenv("KCOMP_AUTOTUNE", "0")
    fake_gpu.timings.update({1: 0.5, 2: 0.1})
    run = lambda config: fake_gpu.ran.append(config["B"])  # noqa: E731
    assert autotune.choose_config("k", (torch.ones(4, 8),), [{"B": 1}, {"B": 2}], run, fake_gpu.out) == {"B": 1}
    assert fake_gpu.ran == [] and not fake_gpu.path.exists()
    monkeypatch.setenv("KCOMP_AUTOTUNE", "1")
    assert autotune.choose_config("k", (torch.ones(4, 8),), [{"B": 1}, {"B": 2}], run, fake_gpu.out) == {"B": 2}
    monkeypatch.setenv("KCOMP_AUTOTUNE", "no")
    with pytest.raises(KcompError, match="KCOMP_AUTOTUNE='no'"):
        autotune.choose_config("k", (torch.ones(4, 8),), [{"B": 1}, {"B": 2}], run, fake_gpu.out)


def test_a_tuned_run_with_kcomp_autotune_0_launches_the_first_candidate_this_gpu_can(monkeypatch):
    """OutOfResources (raised as the kernel compiles, before it runs) moves on to the next candidate."""
    monkeypatch.setenv("KCOMP_AUTOTUNE", "0")
    ran = []

    @autotune.tuned(lambda call, interpret: [{"B": 1}, {"B": 2}, {"B": 3}])
    def run(call, config):
        if config["B"] == 1:
            raise OutOfResources(300000, 232448, "shared memory")
        ran.append(config["B"])

    gpu = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    run(SimpleNamespace(on_cpu=False, binding=SimpleNamespace(kernel_id="k"), inputs=(), out=(gpu,)))
    assert ran == [2]


def test_cpu_and_single_candidates_take_the_first():
    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert autotune.choose_config("k", (), [{"B": 9}, {"B": 1}], None, cpu) == {"B": 9}


def test_timing_an_in_place_kernel_leaves_its_buffer_as_it_was(fake_gpu):
    """A kernel whose output is its input (a running sum the step adds into) runs once per
    timing; the buffer is put back afterwards, so the update is applied once, by the real launch."""

    class OnFakeGpu(torch.Tensor):
        @property
        def device(self):
            return torch.device("cuda")

    running = torch.zeros(3).as_subclass(OnFakeGpu)
    fake_gpu.timings.update({1: 0.3, 2: 0.1})

    def run(config):
        fake_gpu.ran.append(config["B"])
        running.add_(1.0)

    best = autotune.choose_config("k", (running,), [{"B": 1}, {"B": 2}], run, running)
    assert fake_gpu.ran == [1, 2] and running.tolist() == [0.0, 0.0, 0.0]
    run(best)
    assert running.tolist() == [1.0, 1.0, 1.0]


# --- a damaged autotune.json is tuned again, never trusted ---------------------------------------


def _tune(fake_gpu, x):
    fake_gpu.timings.update({1: 0.5, 2: 0.4, 3: 0.2})
    fake_gpu.ran.clear()
    return autotune.choose_config("k", (x,), [{"B": 1}, {"B": 2}, {"B": 3}], lambda c: fake_gpu.ran.append(c["B"]), fake_gpu.out)


DAMAGES = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "emptied": lambda raw: b"",
    "garbage": lambda raw: bytes((i * 37 + 11) % 256 for i in range(len(raw))),
    # Edited choices: before, a choice that is none of the candidates was launched as it was.
    "another choice": lambda raw: raw.replace(b'"B": 3', b'"B": 7'),
    "bare json of another shape": lambda raw: json.dumps({k: 7 for k in autotune._read()}).encode(),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_choice_file_is_tuned_again_and_rewritten(fake_gpu, damage):
    x = torch.ones(4, 8)
    assert _tune(fake_gpu, x) == {"B": 3}
    fake_gpu.path.write_bytes(DAMAGES[damage](fake_gpu.path.read_bytes()))
    autotune._choices = None  # a new process
    assert _tune(fake_gpu, x) == {"B": 3} and fake_gpu.ran == [1, 2, 3]
    autotune._choices = None
    assert _tune(fake_gpu, x) == {"B": 3} and fake_gpu.ran == []  # the rewritten file is whole


def test_an_unreadable_choice_file_of_another_user_is_tuned_in_memory(fake_gpu, monkeypatch, capsys):
    """A 0600 autotune.json in a folder we cannot write (simulated: the tests run as root)."""
    x = torch.ones(4, 8)
    _tune(fake_gpu, x)
    path = fake_gpu.path
    real_read, real_access = pathlib.Path.read_bytes, os.access

    def read_bytes(self):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    def access(p, mode, *args, **kwargs):
        return False if pathlib.Path(p) == path.parent and mode & os.W_OK else real_access(p, mode, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_bytes", read_bytes)
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(disk_cache, "_warned", set())
    autotune._choices = None
    assert _tune(fake_gpu, x) == {"B": 3} and fake_gpu.ran == [1, 2, 3]
    assert _tune(fake_gpu, x) == {"B": 3} and fake_gpu.ran == []  # kept in memory
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write the cache" in err and "KCOMP_CACHE_DIR" in err


def test_a_folder_in_place_of_the_choice_file_is_tuned_in_memory(fake_gpu, monkeypatch, capsys):
    """Neither readable nor replaceable: before, the write raised out of the kernel's first launch."""
    fake_gpu.path.mkdir()
    monkeypatch.setattr(disk_cache, "_warned", set())
    assert _tune(fake_gpu, torch.ones(4, 8)) == {"B": 3}
    assert "cannot write the cache" in capsys.readouterr().err


def test_each_precision_is_tuned_on_its_own(fake_gpu):
    """TF32 and IEEE float32 are different programs: a tile timed for one is not reused for the other."""
    fake_gpu.timings.update({1: 0.5, 2: 0.2})
    launched = []

    @autotune.tuned(lambda call, interpret: [{"B": 1}, {"B": 2}])
    def run(call, config, precision, operand_args):
        fake_gpu.ran.append(config["B"])
        launched.append((config["B"], precision))

    call = SimpleNamespace(binding=SimpleNamespace(kernel_id="k"), inputs=(torch.ones(4, 8),), out=fake_gpu.out, on_cpu=False)
    run(call, precision="tf32", operand_args=[torch.ones(2)])
    run(call, precision="tf32", operand_args=[torch.ones(3)])  # the arguments' tensors are not part of the choice
    run(call, precision="ieee", operand_args=[torch.ones(2)])
    assert launched == [(1, "tf32"), (2, "tf32"), (2, "tf32"), (2, "tf32"), (1, "ieee"), (2, "ieee"), (2, "ieee")]
    assert sorted(key.split("|")[2] for key in autotune._read()) == ["precision=ieee", "precision=tf32"]


def test_graph_timed_candidates_are_timed_replayed_from_a_cuda_graph(fake_gpu, monkeypatch):
    """graph_timed (a stepwise scan's many launches): do_bench_cudagraph times them, never do_bench."""
    graph_timings = {1: 0.9, 2: 0.1}
    timed = []

    def do_bench_cudagraph(fn, rep):
        fn()
        timed.append(fake_gpu.ran[-1])
        return graph_timings[fake_gpu.ran[-1]]

    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", do_bench_cudagraph)
    fake_gpu.timings.update({1: 0.1, 2: 0.9})  # what do_bench would say: the other way round
    candidates = [{"B": 1}, {"B": 2}]
    run = lambda config: fake_gpu.ran.append(config["B"])  # noqa: E731
    assert autotune.choose_config("k", (torch.ones(2, 3),), candidates, run, fake_gpu.out, graph_timed=True) == {"B": 2}
    assert timed == [1, 2]
    assert autotune.choose_config("j", (torch.ones(2, 3),), candidates, run, fake_gpu.out) == {"B": 1}
