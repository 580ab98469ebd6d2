"""Unpickle a data set's arrays without running code from the file.

Keras's data set files hold Python pickles: numpy object arrays inside imdb.npz, and the
CIFAR batches, which are pickled dicts of arrays and lists. A pickle may name any function
for the loader to call (`os.system`, `builtins.exec`), so these are read with an unpickler
that resolves only what a numpy array needs (the array, its dtype and numpy's rebuild
helper, under numpy 1.x's `numpy.core` and 2.x's `numpy._core` names) and refuses every
other global before anything is called. Dicts, lists, strings, bytes and numbers need no
global at all.
"""

import pickle

from kcomp.errors import KcompError

ARRAY_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
})


class ArraysOnlyUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only ARRAY_GLOBALS; any other global is a KcompError naming it."""

    def __init__(self, stream, where: str, encoding: str = "ASCII"):
        super().__init__(stream, encoding=encoding)
        self.where = where

    def find_class(self, module, name):
        if (module, name) in ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise KcompError(f"{self.where}: its pickle names {module}.{name}; only numpy arrays are read. "
                         "The file is damaged or unsafe.")


def load_pickle(stream, where: str, encoding: str = "ASCII"):
    """The object pickled in `stream` (a binary file); `encoding="bytes"` reads Python 2 pickles
    (the CIFAR batches) as Keras does, their strings as bytes."""
    try:
        return ArraysOnlyUnpickler(stream, where, encoding).load()
    except KcompError:
        raise
    except Exception as e:  # a damaged file fails in many ways: EOFError, UnpicklingError, TypeError, ...
        raise KcompError(f"cannot read {where}: {type(e).__name__}: {e}. The file is damaged.") from None
