"""model.save_weights / load_weights: every weight by its path, in a NumPy .npz archive.

Written to a temporary file and renamed, so a crash mid-write leaves the
previous file whole; read with allow_pickle=False, so loading runs no code.
"""

import io
import zipfile

import numpy as np

from kcomp.errors import KcompError, ShapeError, format_shape
from kcomp.support.files import write_bytes_atomic


def save_weights(model, path) -> None:
    arrays = {w.path: w.numpy() for w in model.weights}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_weights(model, path) -> None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {name: archive[name] for name in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        reason = "the file is empty" if isinstance(e, EOFError) or not str(e) else e
        raise KcompError(f"cannot read weights from {path}: {reason}. Expected a file written by model.save_weights.") from None
    missing = [w.path for w in model.weights if w.path not in stored]
    if missing:
        raise KcompError(f"{path} has no weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}; it was saved from another model.")
    extra = sorted(set(stored) - {w.path for w in model.weights})
    if extra:
        raise KcompError(f"{path} holds weights {extra[:5]}{' ...' if len(extra) > 5 else ''} this model does not have; "
                         "it was saved from another model.")
    for w in model.weights:
        value = stored[w.path]
        if tuple(value.shape) != w.shape:
            raise ShapeError(f"{path}: weight {w.path} has shape {format_shape(value.shape)}, the model expects {format_shape(w.shape)}.")
    for w in model.weights:
        w.assign(stored[w.path])
