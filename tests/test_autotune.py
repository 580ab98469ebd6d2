"""Autotuning's choice, skipping and caching, with the GPU timing faked (no GPU here)."""

import json
from types import SimpleNamespace

import pytest
import torch
import triton.testing
from triton.runtime.errors import OutOfResources

from kcomp.runtime import autotune


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
    saved = json.loads(fake_gpu.path.read_text())
    assert list(saved.values()) == [{"B": 3}] and "FakeGPU|k|(4, 8)" in next(iter(saved))
    # Second time (and in a new process, from disk): no timing.
    fake_gpu.ran.clear()
    autotune._choices = None
    assert autotune.choose_config("k", (x,), candidates, run, fake_gpu.out) == {"B": 3}
    assert fake_gpu.ran == []
    # Another shape is tuned on its own.
    autotune.choose_config("k", (torch.ones(5, 8),), candidates, run, fake_gpu.out)
    assert fake_gpu.ran == [1, 2, 3]


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
