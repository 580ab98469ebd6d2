"""Fashion-MNIST (Zalando's clothing images), as keras.datasets.fashion_mnist gives it.

Keras keeps it as four gzipped IDX files in a folder `fashion-mnist` (FILES below); an IDX
file is a big-endian header (two zero bytes, the element type 0x08 for uint8, the number of
dimensions, then each dimension as a 4-byte integer) followed by the values. `load_data`
returns x_train (60000, 28, 28) and x_test (10000, 28, 28) uint8 images, y_train and y_test
uint8 labels 0-9, as Keras does. kcomp does not download: the folder is found as
kcomp.datasets.locate says, or given as `path`.
"""

import gzip
import struct
import zlib

import numpy as np

from kcomp.datasets.locate import KERAS_ORIGIN, DataSet, Place, locate
from kcomp.errors import KcompError

FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
DATA = DataSet("fashion_mnist.load_data", (Place("fashion-mnist", FILES),),
               f"fetch each file from {KERAS_ORIGIN}<file name> into a folder fashion-mnist")
UINT8 = 0x08  # the IDX element type of every Fashion-MNIST file


def load_data(path=None):
    """((x_train, y_train), (x_test, y_test)). `path`: a folder holding the four files (Keras's loader
    has no such argument; by default the folder fashion-mnist is looked for in the data folders)."""
    folder = locate(DATA, path)
    y_train, x_train, y_test, x_test = (read_idx(folder / name, ndim) for name, ndim in zip(FILES, (1, 3, 1, 3)))
    for x, y, name in ((x_train, y_train, FILES[1]), (x_test, y_test, FILES[3])):
        if len(x) != len(y):
            raise KcompError(f"{folder / name} holds {len(x)} images but its labels file {len(y)} labels.")
    return (x_train, y_train), (x_test, y_test)


def read_idx(path, ndim: int) -> np.ndarray:
    """The uint8 array in a gzipped IDX file of `ndim` dimensions (1: labels, 3: images)."""
    try:
        with gzip.open(path, "rb") as f:
            header = f.read(4 + 4 * ndim)
            if len(header) < 4 + 4 * ndim or header[:4] != bytes((0, 0, UINT8, ndim)):
                raise KcompError(f"{path} is not an IDX file of {ndim}-d uint8 data (its header is {header[:4].hex()}, "
                                 f"expected {bytes((0, 0, UINT8, ndim)).hex()}).")
            shape = struct.unpack(f">{ndim}I", header[4:])
            size = int(np.prod(shape))
            values = f.read(size)  # at most what the header says, so a damaged file cannot unpack without bound
    except (OSError, EOFError, zlib.error) as e:
        raise KcompError(f"cannot read {path}: {e}. Expected a gzipped IDX file as Keras's Fashion-MNIST files are.") from None
    if len(values) != size:
        raise KcompError(f"{path} is cut short: {len(values)} of the {size} values its header {shape} promises.")
    return np.frombuffer(bytearray(values), dtype=np.uint8).reshape(shape)  # a bytearray: the array is writable
