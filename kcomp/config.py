"""The one place where kcomp reads environment variables.

KCOMP_DUMP=DIR   write the IR graph after every pass into DIR.
KCOMP_CACHE_DIR  where AOT builds (PTX, cubin) and autotuning choices are cached on disk
                 (default ~/.cache/kcomp); entries are checked when read (kcomp/support/disk_cache.py).
KCOMP_BUILD_JOBS how many worker processes `kcomp build` compiles kernels in (default: one per
                 core this process may run on; 1 compiles them one after another, in the process).
KCOMP_DATA_DIR   the kcomp data folder, where kcomp.datasets looks first for a data set's files
                 (default ~/.kcomp/datasets); kcomp never downloads them.
KCOMP_DIST_TIMEOUT  seconds a data-parallel process waits for the others in one collective before it
                 stops the job with a KcompError (default 120; kcomp/distribution).
KCOMP_DIST_CHECK=1  a data-parallel job compares a digest of every process's weights after each epoch
                 (they must stay identical) and stops with a KcompError naming the processes that drifted.
KCOMP_AUTOTUNE=0 on a GPU, launch each kernel with its first candidate block sizes (the ones AOT builds
                 compile and check; the next where the GPU cannot launch it) instead of timing every
                 candidate at its first launch: no autotuning compiles or timing runs (gpu_check.sh's
                 tests), at the cost of the tuned speed.
KERAS_HOME       Keras's home folder; kcomp.datasets then looks in its datasets/ folder,
                 where Keras keeps what it downloaded (default ~/.keras).
"""

import os
from pathlib import Path

from kcomp.errors import KcompError

# Triton 3.9 warns on every import that its default for fusing a*b+c into FMAs
# will change; kcomp keeps fusion on (the current default) and says so here.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def dump_dir() -> Path | None:
    value = os.environ.get("KCOMP_DUMP", "").strip()
    return Path(value) if value else None


def cache_dir() -> Path:
    value = os.environ.get("KCOMP_CACHE_DIR", "").strip()
    if value:
        return Path(value)
    return Path.home() / ".cache" / "kcomp"


def build_jobs() -> int:
    """$KCOMP_BUILD_JOBS, else the cores this process may run on (a container's share, not the host's)."""
    value = os.environ.get("KCOMP_BUILD_JOBS", "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise KcompError(f"Received: KCOMP_BUILD_JOBS={value!r}. Expected a whole number of worker processes, "
                         "1 or more (e.g. KCOMP_BUILD_JOBS=4), or unset it to use one per core.")
    return int(value)


def autotune() -> bool:
    """Whether kernels time their candidate block sizes on a GPU: $KCOMP_AUTOTUNE, 1 (default) or 0."""
    value = os.environ.get("KCOMP_AUTOTUNE", "").strip()
    if value not in ("", "0", "1"):
        raise KcompError(f"Received: KCOMP_AUTOTUNE={value!r}. Expected 1 (time every candidate block size "
                         "at a kernel's first launch on a GPU, the default) or 0 (launch the first candidate).")
    return value != "0"


def data_dir() -> Path:
    """The kcomp data folder: $KCOMP_DATA_DIR, else ~/.kcomp/datasets."""
    value = os.environ.get("KCOMP_DATA_DIR", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".kcomp" / "datasets"


def keras_dataset_dirs() -> list[Path]:
    """Keras's cache folders: $KERAS_HOME/datasets (else ~/.keras/datasets), and /tmp/.keras/datasets,
    where Keras falls back when its home is not writable."""
    home = os.environ.get("KERAS_HOME", "").strip()
    roots = [Path(home).expanduser()] if home else [Path.home() / ".keras"]
    roots.append(Path("/tmp/.keras"))
    return [root / "datasets" for root in roots]


def dataset_dirs() -> list[Path]:
    """Where kcomp.datasets looks for a data set's files, in order: the kcomp data folder, then
    Keras's cache folders (so a file Keras downloaded is found)."""
    return [data_dir(), *keras_dataset_dirs()]


def distributed_timeout() -> float:
    """Seconds a collective of a data-parallel job may wait for the other processes."""
    value = os.environ.get("KCOMP_DIST_TIMEOUT", "").strip()
    return float(value) if value else 120.0


def launcher_environment() -> dict | None:
    """What torchrun tells each process it starts (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT), or None when this process was not started by it."""
    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    if "WORLD_SIZE" not in os.environ:
        return None
    return {key: os.environ.get(key, "") for key in keys}


def distributed_checks() -> bool:
    return os.environ.get("KCOMP_DIST_CHECK", "").strip() not in ("", "0")
