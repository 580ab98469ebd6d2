"""Data-parallel training on torch.distributed, in the shape of Keras 3's distribution API.

    import kcomp
    kcomp.distribution.set_distribution(kcomp.distribution.DataParallel())
    model.compile(...); model.fit(x, y, batch_size=64)   # run with: torchrun --nproc-per-node 2 train.py

After set_distribution (or inside `with DataParallel().scope():`), fit, evaluate and predict run in every
process that torchrun started: each process runs the same compiled step on its share of each global
batch (`batch_size` is the global batch, as in Keras's DataParallel), the gradients are summed in
flat buckets, each started as soon as the backward has computed it, before the one optimizer
update (kcomp.distribution.step_runner; on the triton backends inside the fused step,
kcomp.distribution.fused_step), the weights start
as process 0's, and the logs, History and callbacks see the whole job's numbers. Only process 0
prints the progress bar and writes files (save_weights, save, ModelCheckpoint, CSVLogger).
predict runs each process's share of every batch and gathers the outputs, so each process gets
every prediction (kcomp.distribution.sharded_predict). Every process
reads the same data: arrays are shuffled in process 0's order, a PyDataset's batches too; a
generator must yield the same batches in every process (each takes its share of each batch).

The process group comes from torchrun's environment: gloo on CPUs, NCCL on GPUs. A process started
without torchrun is a job of one.
"""

import contextlib
import hashlib

import torch

from kcomp import config
from kcomp.distribution.collectives import BUCKET_MB, DistributedError, ProcessGroup
from kcomp.errors import ArgumentError, KcompError

_current = None  # the distribution set_distribution made current (Keras keeps one global too)


class DataParallel:
    """Keras's DataParallel: the model replicated on every device, each global batch split across them.

    devices: the job's devices, one per process (as list_devices() names them); None takes them all.
    bucket_cap_mb (kcomp's, as PyTorch DDP names it): the MiB of gradients each flat all-reduce sums;
    each starts once the backward has computed its bucket's gradients, the last layer's first.
    """

    def __init__(self, device_mesh=None, devices=None, auto_shard_dataset=True, bucket_cap_mb=BUCKET_MB):
        if device_mesh is not None:
            raise ArgumentError(f"Received: device_mesh={device_mesh!r}. kcomp's DataParallel takes `devices` (one per "
                                "process torchrun starts); give devices=kcomp.distribution.list_devices() or None.")
        if not auto_shard_dataset:
            raise ArgumentError("Received: auto_shard_dataset=False. kcomp shards each global batch across the "
                                "processes itself; give every process the same data and auto_shard_dataset=True.")
        self.group = ProcessGroup()
        self.devices = list_devices() if devices is None else list(devices)
        if len(self.devices) != self.group.world:
            raise ArgumentError(f"Received: devices={self.devices!r} ({len(self.devices)} devices), but this job has "
                                f"{self.group.world} process(es), one per device. Start one process per device "
                                f"(torchrun --nproc-per-node {len(self.devices)} ...) or give devices=None.")
        self.auto_shard_dataset = True
        if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float)) or not bucket_cap_mb > 0:
            raise ArgumentError(f"Received: bucket_cap_mb={bucket_cap_mb!r}. Expected a positive number of MiB "
                                f"(PyTorch DDP's default is {BUCKET_MB:g}).")
        self.bucket_bytes = float(bucket_cap_mb) * 1024 * 1024

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def world(self) -> int:
        return self.group.world

    @contextlib.contextmanager
    def scope(self):
        """The distribution in force inside the `with` block, as Keras's distribution.scope()."""
        global _current
        previous, _current = _current, self
        try:
            yield self
        finally:
            _current = previous

    def runner(self, model, step):
        """The StepRunner (kcomp.training.runners) of `step` in this job."""
        from kcomp.distribution.step_runner import DataParallelStep, check_supported

        check_supported(model, model._training, self.world)
        # A synchronized BatchNormalization's moving statistics: the job's, so every process updates them.
        shared = [w.path for w in model.weights if _synchronized_statistic(w)]
        if model.backend == "reference":
            return DataParallelStep(step, self, shared)
        from kcomp.distribution.fused_step import FusedDataParallelStep

        return FusedDataParallelStep(step, self, shared, model)


def set_distribution(value) -> None:
    """Make `value` (a DataParallel, or None for one process) the distribution fit, evaluate and predict use."""
    global _current
    if value is not None and not isinstance(value, DataParallel):
        raise ArgumentError(f"Received: {value!r}. set_distribution takes a kcomp.distribution.DataParallel or None.")
    _current = value


def distribution():
    """The distribution in force (None: training runs in this process alone)."""
    return _current


def list_devices(device_type=None) -> list[str]:
    """The job's devices, one per process: "cpu:0", "cpu:1", ... (or "gpu:i" where CUDA is available)."""
    kind = (device_type or ("gpu" if torch.cuda.is_available() else "cpu")).lower()
    if kind not in ("cpu", "gpu"):
        raise ArgumentError(f"Received: device_type={device_type!r}. Expected 'cpu', 'gpu' or None.")
    env = config.launcher_environment()
    return [f"{kind}:{i}" for i in range(int(env["WORLD_SIZE"]) if env else 1)]


def initialize(job_addresses=None, num_processes=None, process_id=None) -> None:
    """Keras's multi-host start-up. Here torchrun's environment says all of it (torchrun --nnodes M
    --node-rank i --rdzv-endpoint HOST:PORT ...), so only consistent arguments are accepted."""
    env = config.launcher_environment()
    if env is None and (num_processes or 1) > 1:
        raise KcompError("kcomp joins a multi-process job through torchrun's environment; start this script with "
                         "torchrun --nnodes M --nproc-per-node N ... instead of passing job_addresses.")
    if env is not None and num_processes is not None and int(num_processes) != int(env["WORLD_SIZE"]):
        raise ArgumentError(f"Received: num_processes={num_processes}, but torchrun started {env['WORLD_SIZE']}.")
    if env is not None and process_id is not None and int(process_id) != int(env["RANK"]):
        raise ArgumentError(f"Received: process_id={process_id}, but torchrun gave this process rank {env['RANK']}.")


# -- what fit, evaluate and the files ask (kcomp.training, kcomp.models, kcomp.callbacks) ------------
def writes_here() -> bool:
    """Whether this process prints progress and writes files: process 0, or any process of a job of one."""
    return _current is None or _current.rank == 0


def on_writer(write) -> None:
    """Run `write()` (a save) on process 0 only; every process then waits for it, so a process that
    reads the file next finds it whole."""
    if _current is None or _current.world == 1:
        write()
        return
    if _current.rank == 0:
        write()
    _current.group.barrier("waiting for process 0 to write a file")


def check_replicas(model, epoch: int) -> None:
    """With KCOMP_DIST_CHECK=1, after each epoch: every process must hold the same weights (a digest),
    but for the moving statistics of a BatchNormalization(synchronized=False), which are per process."""
    if _current is None or _current.world == 1 or not config.distributed_checks():
        return
    digest = hashlib.sha256()
    for weight in (w for w in model.weights if not _per_process(w)):
        digest.update(weight.path.encode())
        digest.update(weight.value.detach().cpu().contiguous().numpy().tobytes())
    _current.group.check_same(f"digest {digest.hexdigest()[:16]}", f"weights after epoch {epoch + 1}",
                              "The replicas drifted apart: a kcomp bug, or a callback that changed the weights "
                              "on some processes only.")


def _moving_statistic(weight) -> bool:
    return any(weight is getattr(weight.owner, name, None) for name in ("moving_mean", "moving_variance"))


def _per_process(weight) -> bool:
    """A moving statistic of a BatchNormalization(synchronized=False): each process keeps its own."""
    return getattr(weight.owner, "synchronized", None) is False and _moving_statistic(weight)


def _synchronized_statistic(weight) -> bool:
    return getattr(weight.owner, "synchronized", None) is True and _moving_statistic(weight)


def same_order(order: torch.Tensor) -> torch.Tensor:
    """A shuffled order of the samples, process 0's on every process (each sample once per epoch)."""
    if _current is None or _current.world == 1:
        return order
    return _current.group.broadcast([order], "sharing the epoch's shuffled order")[0]


__all__ = ["DataParallel", "DistributedError", "distribution", "initialize", "list_devices", "set_distribution"]
