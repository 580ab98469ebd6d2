"""Cache entries on disk that are checked when read, so a damaged cache heals.

Every entry file starts with one header line that gives the size and SHA-256 of the bytes
after it:

    kcomp-cache 1 size=50040 sha256=3f0c...\n<the entry's bytes>

`read_entry` returns the bytes only when they match; an entry that is missing, truncated,
emptied, overwritten with garbage or unreadable reads as None, and the caller builds it
again and writes it back. Writes are atomic (temp file + rename, kcomp.support.files), so
concurrent processes see a whole entry or none. Where an entry cannot be written (a cache
folder of another user, a read-only disk) the caller keeps what it built in memory: the
write says so once per cache folder, in one line on stderr, and returns False.
"""

import hashlib
import re
import sys
from pathlib import Path

from kcomp import config
from kcomp.errors import KcompError
from kcomp.support.files import write_bytes_atomic

_HEADER = re.compile(rb"kcomp-cache 1 size=(\d+) sha256=([0-9a-f]{64})\n")
_warned: set[str] = set()


def encode_entry(data: bytes) -> bytes:
    return f"kcomp-cache 1 size={len(data)} sha256={hashlib.sha256(data).hexdigest()}\n".encode() + data


def decode_entry(raw: bytes) -> bytes | None:
    """The entry's bytes, or None when the header is missing or they do not match it."""
    match = _HEADER.match(raw)
    if match is None:
        return None
    data = raw[match.end():]
    if len(data) != int(match.group(1)) or hashlib.sha256(data).hexdigest() != match.group(2).decode():
        return None
    return data


def read_entry(path) -> bytes | None:
    """The verified bytes of the entry at `path`, or None (missing, damaged or unreadable)."""
    try:
        raw = Path(path).read_bytes()
    except OSError:  # missing, a folder, permission denied, an I/O error
        return None
    return decode_entry(raw)


def write_entry(path, data: bytes) -> bool:
    """Write the entry atomically; False (and one warning per cache) where it cannot be written."""
    try:
        write_bytes_atomic(path, encode_entry(data))
        return True
    except (OSError, KcompError) as e:
        _warn_once(Path(path).parent, e)
        return False


def _warn_once(folder: Path, error: Exception) -> None:
    root = config.cache_dir()
    if root in folder.parents:  # one line for the whole cache, not one per entry's folder
        folder = root
    if str(folder) in _warned:
        return
    _warned.add(str(folder))
    why = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"kcomp: warning: cannot write the cache in {folder} ({why}); kept in memory, "
          "set KCOMP_CACHE_DIR to a folder you own to cache builds", file=sys.stderr)
