"""The MNIST handwritten digits, as keras.datasets.mnist gives them.

`load_data` reads Keras's `mnist.npz`: x_train (60000, 28, 28) and x_test (10000, 28, 28)
uint8 images, pixels 0-255; y_train and y_test uint8 labels 0-9. The file is found as
kcomp.datasets.locate says (a path you give, $KCOMP_DATA_DIR or ~/.kcomp/datasets, Keras's
cache folders); kcomp does not download it.
"""

from kcomp.datasets.locate import KERAS_ORIGIN, DataSet, Place, locate
from kcomp.datasets.npz import load_npz, members
from kcomp.errors import KcompError

DATA = DataSet("mnist.load_data", (Place("mnist.npz"),), f"fetch {KERAS_ORIGIN}mnist.npz")


def load_data(path="mnist.npz"):
    """((x_train, y_train), (x_test, y_test)) from mnist.npz, unchanged."""
    found = locate(DATA, path)
    x_train, y_train, x_test, y_test = members(load_npz(found), ("x_train", "y_train", "x_test", "y_test"), found)
    for x, y in ((x_train, y_train), (x_test, y_test)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise KcompError(f"{found} holds images {x.shape} and labels {y.shape}; expected (N, 28, 28) and (N,).")
    return (x_train, y_train), (x_test, y_test)
