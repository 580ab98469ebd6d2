"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The new bytes go to a temporary file beside the target, then replace it in one rename. A save
through a symbolic link writes the file the link points to (the link stays). The temporary's
name carries the writing process's id, so the next save of the same path removes temporaries
left by a process that was killed mid-write, and never one that another live process is still
writing. The file gets the permissions a new file would get (the user's umask), or keeps those
of the file it replaces. An error (a folder as the path, a full disk, a read-only folder) is a
KcompError that says so, and the old file stays as it was.
"""

import os
import re
import tempfile
from pathlib import Path

from kcomp.errors import KcompError


def write_bytes_atomic(path, data: bytes) -> None:
    target = Path(os.path.realpath(path))  # through symlinks: the link keeps pointing at the new file
    check_writable(target)
    _remove_stale_temporaries(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise KcompError(f"cannot write {path}: {e.strerror} ({target.parent}). Choose a folder you can write to.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except OSError as e:
        _unlink_quietly(tmp)
        raise KcompError(f"cannot write {path}: {e.strerror}. The previous file, if any, is unchanged.") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def check_writable(path) -> None:
    """Fail now, with a KcompError, if `path` could not be saved to later: it is a folder, its
    parent is a file, or the folder is not writable. (Training checks this before it starts.)"""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise KcompError(f"cannot write {path}: it is a folder. Give a file name inside it.")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise KcompError(f"cannot write {path}: {_first_file_above(parent)} is a file, not a folder.") from None
    except OSError as e:
        raise KcompError(f"cannot write {path}: cannot make folder {parent}: {e.strerror}.") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KcompError(f"cannot write {path}: folder {parent} is not writable. Choose a folder you can write to.")


def _first_file_above(folder: Path) -> Path:
    for candidate in [folder, *folder.parents]:
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return folder


def _remove_stale_temporaries(target: Path) -> None:
    """Temporaries of this path left by processes that no longer run (killed mid-save)."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[^.]+\.tmp$")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        match = pattern.match(name)
        if match and not _process_alive(int(match.group(1))):
            _unlink_quietly(target.parent / name)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _mode_for(target: Path) -> int:
    """The replaced file's permissions, or a new file's under the user's umask (mkstemp makes 0600)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:  # Linux: read without changing it
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then put back
    os.umask(mask)
    return mask


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
