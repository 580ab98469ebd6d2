"""Starting a data-parallel job on this machine: torchrun itself, as a user would type it.

`kcomp fit model.k --nproc N` runs `python -m torch.distributed.run --standalone --nproc-per-node N
-m kcomp fit model.k ...` (the same arguments): torchrun picks a free port, starts the N processes
with its environment, stops them all when one fails, and exits with the first failure's code. Each
process then sees torchrun's environment and trains under a DataParallel distribution (as does
`torchrun --nnodes M --nproc-per-node N ... -m kcomp fit model.k ...` typed by hand, across machines).
"""

import subprocess
import sys

from kcomp import config
from kcomp.errors import ArgumentError


def started_by_torchrun() -> bool:
    return config.launcher_environment() is not None


def without_nproc(argv: list[str]) -> list[str]:
    """The command line less its --nproc N (each process of the job knows it is one from torchrun)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def run_under_torchrun(nproc: int, module_argv: list[str]) -> int:
    """Run `python -m kcomp <module_argv>` in `nproc` processes under torchrun; its exit code."""
    if nproc < 1:
        raise ArgumentError(f"Received: --nproc {nproc}. Expected a positive number of processes.")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "kcomp", *module_argv]
    return subprocess.run(command, check=False).returncode
