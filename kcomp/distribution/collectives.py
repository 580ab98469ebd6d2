"""The collectives a data-parallel job runs, on torch.distributed's process group.

The group comes from torchrun's environment (env://): gloo for CPU tensors, and where CUDA is
available NCCL for CUDA tensors (one GPU per process, by LOCAL_RANK). Every collective here waits at most the job's timeout (KCOMP_DIST_TIMEOUT), and a failed
one (a process that died, raised and left, or cannot be reached) becomes a DistributedError on
this process, so no process of a broken job hangs or ends in a bare torch traceback.

A process started without torchrun is a job of one: every collective is then the identity.
"""

import atexit
import contextlib
import hashlib
from datetime import timedelta

import torch
import torch.distributed as dist

from kcomp import config
from kcomp.errors import KcompError

BUCKET_MB = 25.0  # gradients reduced per flat bucket, in MiB: PyTorch DDP's default bucket_cap_mb


def buckets(tensors, order, cap_bytes: float) -> list[list[int]]:
    """The flat buckets of `tensors` (indices), filled in `order`: one open bucket per dtype, closed
    as soon as it holds `cap_bytes` or more (as DDP fills its buckets); then the ones left open."""
    done, open_ = [], {}
    for i in order:
        members, size = open_.get(tensors[i].dtype, ([], 0))
        members.append(i)
        size += tensors[i].numel() * tensors[i].element_size()
        if size >= cap_bytes:
            done.append(members)
            open_.pop(tensors[i].dtype, None)
        else:
            open_[tensors[i].dtype] = (members, size)
    return done + [members for members, _ in open_.values()]


def flatten(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(flat: torch.Tensor, like) -> list[torch.Tensor]:
    return [piece.view(t.shape) for piece, t in zip(flat.split([t.numel() for t in like]), like, strict=True)]


class DistributedError(KcompError):
    """A data-parallel job cannot go on: another process failed, or the processes disagree."""


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class ProcessGroup:
    """This process's place in the job: rank, world size, and the collectives over it."""

    def __init__(self):
        env = config.launcher_environment()
        self.timeout = config.distributed_timeout()
        if env is None:
            self.rank, self.world = 0, 1
            return
        if not dist.is_initialized():
            # Each collective goes by its tensors' device: CPU tensors over gloo (the reference executor's
            # steps), CUDA tensors over NCCL, one GPU per process.
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
            if torch.cuda.is_available():
                torch.cuda.set_device(int(env["LOCAL_RANK"] or 0))
            with self.failing("joining the process group"):
                dist.init_process_group(backend, timeout=timedelta(seconds=self.timeout))
            # A process that exits with the group still up can abort in gloo's teardown (SIGABRT,
            # seen in about one exit in three here): take it down first.
            atexit.register(_leave)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def backend(self) -> str:
        return dist.get_backend() if self.world > 1 else "none"

    @contextlib.contextmanager
    def failing(self, what: str):
        """Turns a collective's failure into a DistributedError that says what this process was doing."""
        try:
            yield
        except DistributedError:
            raise
        except (RuntimeError, ValueError) as e:  # torch's DistBackendError and gloo's errors are RuntimeErrors
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistributedError(
                f"Process {getattr(self, 'rank', '?')} of a data-parallel job: {what} failed ({first_line}). Another "
                f"process stopped, raised or could not be reached within KCOMP_DIST_TIMEOUT={self.timeout:g} s, so "
                "the whole job stops; the first error is in that process's output.") from e

    # -- the collectives --------------------------------------------------------------
    def all_reduce_flat(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        """The sum over processes of each tensor, reduced in flat buckets (one collective per bucket
        and dtype, all in flight at once); returns new tensors of the same shapes."""
        if self.world == 1:
            return list(tensors)
        flats = [(members, flatten([tensors[i] for i in members]))
                 for members in buckets(tensors, range(len(tensors)), BUCKET_MB * 1024 * 1024)]
        self.wait([self.start_sum(flat, what) for _, flat in flats], what)
        out = list(tensors)
        for members, flat in flats:
            for i, piece in zip(members, unflatten(flat, [tensors[i] for i in members]), strict=True):
                out[i] = piece
        return out

    def start_sum_as_one(self, tensors: list[torch.Tensor], what: str):
        """Start the sum over processes of each tensor, as one flat all-reduce (a bucket the caller
        made): (the sums, as views of the flat buffer, and `wait`, which returns once they hold the
        job's sums; None in a job of one). Whatever runs between the two overlaps the all-reduce: on
        CPUs gloo sums on its own thread; on a GPU NCCL sums on its own stream, and `wait` makes the
        current stream wait for it. While a CUDA graph is being captured (a fused step's), `wait`
        waits without a timeout: a timed wait is a host wait, which has no place in a capture."""
        if self.world == 1:
            return list(tensors), None
        flat = flatten(tensors)
        capturing = flat.is_cuda and torch.cuda.is_current_stream_capturing()
        with self.failing(what):
            work = dist.all_reduce(flat, async_op=True)
        done = []

        def wait():
            if not done:
                with self.failing(what):
                    work.wait() if capturing else work.wait(timedelta(seconds=self.timeout))
                done.append(True)

        return unflatten(flat, tensors), wait

    def start_sum(self, flat: torch.Tensor, what: str):
        """Start summing `flat` over the processes, in place: the collective's work handle (None
        in a job of one), which `wait` waits for."""
        if self.world == 1:
            return None
        with self.failing(what):
            return dist.all_reduce(flat, async_op=True)

    def wait(self, works, what: str) -> None:
        with self.failing(what):
            for work in works:
                if work is not None:
                    work.wait(timedelta(seconds=self.timeout))

    def broadcast(self, tensors: list[torch.Tensor], what: str) -> list[torch.Tensor]:
        """Rank 0's values of `tensors` (copies on the other ranks)."""
        if self.world == 1:
            return list(tensors)
        out = [t.detach().clone().contiguous() for t in tensors]
        with self.failing(what):
            for t in out:
                dist.broadcast(t, src=0)
        return out

    def all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        """Every process's `tensor` (of one shape and dtype in all), in rank order."""
        if self.world == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world)]
        with self.failing(what):
            dist.all_gather(parts, tensor.contiguous())
        return parts

    def barrier(self, what: str) -> None:
        if self.world > 1:
            with self.failing(what):
                # gloo's monitored barrier names a process that does not arrive
                dist.monitored_barrier(timeout=timedelta(seconds=self.timeout)) if "gloo" in self.backend else dist.barrier()

    def check_same(self, description: str, what: str, fix: str) -> None:
        """Every process must give the same `description`; else a DistributedError on every process
        that names the processes that differ from rank 0 and shows this process's own."""
        if self.world == 1:
            return
        digest = int.from_bytes(hashlib.sha256(description.encode()).digest()[:7], "little")
        mine = torch.tensor([digest], dtype=torch.int64)
        gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        with self.failing(f"comparing the {what} of the processes"):
            dist.all_gather(gathered, mine)
        differ = [r for r, d in enumerate(gathered) if int(d) != int(gathered[0])]
        if differ:
            raise DistributedError(f"The {what} of process(es) {differ} differ from process 0's; this is process "
                                   f"{self.rank}, whose {what} are: {description}. {fix}")
