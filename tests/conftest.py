import os

# Kernel tests run the real templates under Triton's interpreter, which Triton
# reads once, when it is first imported: so set it before anything imports it.
# AOT tests compile in subprocesses started without it (see tests/aot_helpers.py).
# KCOMP_GPU_TESTS=1 runs only the tests marked `gpu`: on a GPU machine with compiled kernels; where
# there is no CUDA (bench/gpu_check.sh --rehearse) under the interpreter, their CUDA-only parts skipped.
# torch.cuda.is_available() does not import Triton.
# Under pytest-xdist (README: `-n auto`) each worker process keeps to one thread, it and the
# processes it starts (OMP_NUM_THREADS, read when torch loads): with one worker per core, torch's
# and NumPy's thread pools in every worker would otherwise contend for the same cores, and an
# OpenMP pool that spins while another process holds its core is slower than one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # in case a plugin imported torch before this file

GPU_RUN = os.environ.get("KCOMP_GPU_TESTS") == "1"
if not (GPU_RUN and torch.cuda.is_available()):
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Keras 3 is the oracle of the side-by-side tests (tests/keras_oracle.py), on its torch backend;
# Keras reads the backend once, when it is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest

import kcomp


@pytest.fixture(autouse=True, scope="session")
def cache_of_this_run(tmp_path_factory):
    """kcomp's disk cache (AOT builds, autotuning choices) in a folder of this test run, shared by its
    workers and the processes they start, unless KCOMP_CACHE_DIR is set: the tests neither read the
    user's ~/.cache/kcomp (a warm one hid compile time that a fresh machine, CI's, pays) nor fill it."""
    if os.environ.get("KCOMP_CACHE_DIR", "").strip():
        return
    base = tmp_path_factory.getbasetemp()
    run = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # under xdist: pytest-N/popen-gwK
    os.environ["KCOMP_CACHE_DIR"] = str(run / "kcomp-cache")


@pytest.fixture(autouse=True)
def fresh_session():
    """Each test starts with Keras's default layer names (dense, dense_1, ...) and a fixed seed."""
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(1234)
    torch.manual_seed(1234)
    yield


def pytest_collection_modifyitems(config, items):
    if GPU_RUN:
        items[:] = [item for item in items if "gpu" in item.keywords]
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and KCOMP_GPU_TESTS=1 (bench/gpu_check.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/*.txt from the current output")


@pytest.fixture
def golden(request):
    """golden(name, text): compare `text` with tests/golden/<name>.txt (or rewrite it with --update-golden)."""
    from pathlib import Path

    folder = Path(__file__).parent / "golden"

    def check(name: str, text: str) -> None:
        path = folder / f"{name}.txt"
        if request.config.getoption("--update-golden"):
            folder.mkdir(exist_ok=True)
            path.write_text(text)
            return
        assert path.exists(), f"no golden file {path}; run pytest with --update-golden to create it"
        assert text == path.read_text(), f"{path} differs; inspect and run pytest --update-golden if intended"

    return check
