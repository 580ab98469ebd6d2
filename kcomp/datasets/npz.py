"""Read an .npz archive of arrays, including ragged object arrays, without running its code.

Keras's data set files (imdb.npz, reuters.npz) hold lists of word ids as numpy object
arrays, which numpy stores as pickles. Unpickling can run any code the file names, so
object arrays are read by kcomp.datasets.safe_pickle, which resolves only numpy's array
and dtype reconstruction and refuses every other global; numeric arrays are read with
pickling off. Every element of an object array must then be a list of ints.
"""

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from kcomp.datasets.safe_pickle import load_pickle
from kcomp.errors import KcompError

MAX_MEMBER_BYTES = 1 << 30  # a member larger than this is refused before it is read


def _read_member(raw: bytes, where: str) -> np.ndarray:
    stream = io.BytesIO(raw)
    try:
        return np.lib.format.read_array(stream, allow_pickle=False)
    except ValueError:
        pass  # an object array: its data is a pickle after the header
    stream.seek(0)
    major, _ = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    read_header(stream)
    array = load_pickle(stream, where)
    if not isinstance(array, np.ndarray):
        raise KcompError(f"{where} does not hold an array; the file is damaged.")
    for row in array.ravel():
        if not (isinstance(row, (list, np.ndarray)) and all(isinstance(v, (int, np.integer)) for v in row)):
            raise KcompError(f"{where} holds {type(row).__name__} values; expected lists of word ids.")
    return array


def load_npz(path: Path) -> dict:
    """{name: array} of every .npy member of the archive at `path`."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                if info.file_size > MAX_MEMBER_BYTES:
                    raise KcompError(f"{path}: member {info.filename} would unpack to {info.file_size} bytes; refusing it.")
                arrays[info.filename[: -len(".npy")]] = _read_member(archive.read(info), f"{path}:{info.filename}")
    except (zipfile.BadZipFile, OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
        raise KcompError(f"cannot read {path}: {e}. Expected an .npz archive as Keras's data sets are.") from None
    return arrays


def members(arrays: dict, names, where) -> list:
    """The arrays called `names`, in order; a KcompError naming what `where` lacks."""
    missing = [name for name in names if name not in arrays]
    if missing:
        raise KcompError(f"{where} has no {', '.join(missing)}; expected an .npz with {', '.join(names)}, as Keras's is.")
    return [arrays[name] for name in names]
