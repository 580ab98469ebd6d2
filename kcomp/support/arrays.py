"""User data as arrays of numbers: numeric_array checks inputs, targets and sample weights;
load_arrays reads x and y from an .npz file for `kcomp fit` / `kcomp evaluate` (without pickle),
save_arrays writes one (atomically).
"""

import io
import zipfile

import numpy as np

from kcomp.errors import KcompError
from kcomp.support.files import write_bytes_atomic


def save_arrays(path, arrays: dict) -> None:
    """Write numeric arrays as an .npz that load_arrays reads (no pickled objects), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(a) for name, a in arrays.items()})
    write_bytes_atomic(path, buffer.getvalue())


def load_arrays(path, n_inputs: int, n_outputs: int):
    """x and y from an .npz: arrays named x and y, or x0, x1, ... and y0, y1, ... for several."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise KcompError(f"cannot read {path}: {e}. Expected an .npz file (numpy.savez) with arrays x and y.") from None

    def pick(prefix, count):
        if count == 1 and prefix in arrays:
            return arrays[prefix]
        names = [f"{prefix}{i}" for i in range(count)]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise KcompError(f"{path} has arrays {sorted(arrays)}; expected {prefix!r} (or {', '.join(names)}).")
        found = [arrays[n] for n in names]
        return found[0] if count == 1 else found

    return pick("x", n_inputs), pick("y", n_outputs)


def numeric_array(data, what: str) -> np.ndarray:
    """`data` as a numpy array of numbers or bools, or a KcompError that names what it holds:
    strings, objects, None, complex numbers and ragged lists cannot be trained on or predicted."""
    if data is None:
        raise KcompError(f"The {what} are None; pass an array of numbers.")
    try:
        array = np.asarray(data)
    except ValueError as e:  # numpy: "setting an array element with a sequence ... inhomogeneous shape"
        raise KcompError(f"The {what} are ragged (rows of different lengths: {e}); pad them to one shape first, "
                         "e.g. kcomp.utils.pad_sequences.") from None
    kind = array.dtype.kind
    if kind == "c":
        raise KcompError(f"The {what} are complex numbers ({array.dtype}); kcomp takes real numbers (use .real or abs()).")
    if kind not in "biuf":
        raise KcompError(f"The {what} have dtype {array.dtype} ({_example(array)}); pass numbers (int, float or bool arrays).")
    return array


def _example(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    return f"e.g. {flat[0]!r}" if flat.size else "empty"
