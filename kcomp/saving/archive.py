"""Keras 3's `.keras` archive: a zip of metadata.json, config.json and model.weights.h5.

`save_model` writes what `keras.saving.load_model` reads (the config with the
compile config, the weights and optimizer state in Keras's HDF5 layout), built
in memory and written with one atomic rename. `load_model` reads archives Keras
wrote, and refuses, before building anything: members with absolute paths, `..`
or symbolic links; members that decompress past a cap (counted while streaming,
so a zip bomb is refused, not expanded); configs naming classes outside kcomp's
allow-list (kcomp/saving/allow_list.py). The weights are checked whole
against the model before any is assigned (kcomp/saving/keras_h5.py).
"""

import datetime
import io
import json
import stat
import zipfile
import zlib
from pathlib import PurePosixPath

from kcomp.errors import KcompError
from kcomp.saving import keras_h5, serialization
from kcomp.saving.allow_list import KERAS_VERSION
from kcomp.support.files import write_bytes_atomic

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MAX_JSON_BYTES = 64 * 2**20  # a config is KBs; a bigger one is refused, not parsed
MAX_WEIGHTS_BYTES = 32 * 2**30
MAX_RATIO = 1000  # Keras stores members uncompressed; weights do not shrink 1000-fold


class ArchiveError(KcompError):
    """A .keras file kcomp will not read (damaged, unsafe, or not a Keras 3 archive)."""


def save_model(model, path) -> None:
    """Write `model` as a Keras 3 `.keras` archive that keras.saving.load_model reads."""
    if not str(path).endswith(".keras"):
        raise ArchiveError(f"Received: filepath={str(path)!r}. A Keras model file's name ends in .keras (model.save('model.keras')).")
    config = json.dumps(serialization.serialize_model(model))
    metadata = json.dumps({"keras_version": KERAS_VERSION,
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(METADATA, metadata)
        zf.writestr(CONFIG, config)
        zf.writestr(WEIGHTS, keras_h5.h5_bytes(model))
    write_bytes_atomic(path, buffer.getvalue())


def _check_members(zf: zipfile.ZipFile, source: str) -> None:
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
            raise ArchiveError(f"{source}: member {name!r} points outside the archive (absolute path or '..'); refusing the file.")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"{source}: member {name!r} is a symbolic link; refusing the file.")


def _read_member(zf: zipfile.ZipFile, name: str, cap: int, source: str) -> bytes:
    """A member's bytes, refusing it as soon as it decompresses past `cap` (or far past its compressed size)."""
    info = zf.getinfo(name)
    if info.file_size > cap or (info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1)):
        raise ArchiveError(
            f"{source}: {name} would decompress to {info.file_size:,} bytes from {info.compress_size:,} "
            f"(at most {cap:,} read); refusing what looks like a zip bomb."
        )
    chunks, total = [], 0
    try:
        with zf.open(info) as f:
            while chunk := f.read(2**20):
                total += len(chunk)
                if total > min(cap, info.file_size):
                    raise ArchiveError(f"{source}: {name} decompresses past {min(cap, info.file_size):,} bytes; refusing what looks like a zip bomb.")
                chunks.append(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as e:
        raise ArchiveError(f"{source}: cannot read {name}: {e}. The archive is damaged; save the model again.") from None
    return b"".join(chunks)


def read_archive(path) -> tuple[dict, bytes]:
    """(the config, the weights file's bytes) of a .keras archive, checked."""
    source = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ArchiveError(f"cannot read {source}: {e}. Expected a .keras file written by Keras 3 or kcomp's model.save.") from None
    with zf:
        _check_members(zf, source)
        names = set(zf.namelist())
        if CONFIG not in names:
            raise ArchiveError(f"{source} has no {CONFIG}; it is not a Keras 3 .keras archive.")
        try:
            config = json.loads(_read_member(zf, CONFIG, MAX_JSON_BYTES, source))
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise ArchiveError(f"{source}: {CONFIG} is not JSON a model config can be ({type(e).__name__}: {e}).") from None
        if WEIGHTS not in names:
            other = sorted(n for n in names if n.startswith("model.weights"))
            raise ArchiveError(f"{source} has no {WEIGHTS}{f' (it has {other}; kcomp reads HDF5 weights only)' if other else ''}.")
        weights = _read_member(zf, WEIGHTS, MAX_WEIGHTS_BYTES, source)
    return config, weights


def load_model(path, compile: bool = True):
    """A kcomp model from a Keras 3 `.keras` archive, compiled and with its optimizer state when it has them."""
    import h5py

    config, weights = read_archive(path)
    if not isinstance(config, dict):
        raise ArchiveError(f"{path}: {CONFIG} does not hold a model config.")
    if not compile:
        config = {k: v for k, v in config.items() if k != "compile_config"}
    try:
        model = serialization.model_from_config(config)
    except RecursionError:
        raise ArchiveError(f"{path}: {CONFIG} nests its objects too deeply to be a model config.") from None
    try:
        f = h5py.File(io.BytesIO(weights), "r")
    except OSError as e:
        raise ArchiveError(f"{path}: {WEIGHTS} is not an HDF5 file ({e}).") from None
    with f:
        assignments = keras_h5.read_h5(model, f, f"{path}:{WEIGHTS}")
    keras_h5.apply(assignments)
    return model
