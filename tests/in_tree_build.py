"""One in-tree build of the repository at a time.

pip builds a local project in its own folder (setuptools writes build/ and kcomp.egg-info/ there),
so two tests that build the repository at once, in two pytest-xdist workers, would write the same
files. Each such build holds this lock, an flock on a file in the temporary folder, released when
the build ends or its process dies.
"""

import fcntl
import hashlib
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Named by the repository's path (a stable digest: str hashes differ between processes), so two checkouts
# do not wait for each other.
LOCK = Path(tempfile.gettempdir()) / f"kcomp-in-tree-build-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:12]}.lock"


@contextmanager
def in_tree_build():
    with open(LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield ROOT
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
