"""The 8x8 handwritten digits bundled with scikit-learn, split as Keras splits a data set.

`load_data(test_split=0.2, seed=113)` takes scikit-learn's `load_digits()` (1797 images),
shuffles it with numpy's RandomState(seed) and keeps the first 1 - test_split for training,
as keras.datasets.boston_housing splits. It returns ((x_train, y_train), (x_test, y_test)) in
Keras's image conventions, like kcomp.datasets.mnist: x (N, 8, 8) uint8 images whose pixels
are 0-16 (scikit-learn's ink counts: divide by 16 for [0, 1]; add a last axis of 1 for
Conv2D), y (N,) uint8 labels 0-9. Nothing is read from the network: scikit-learn ships the
data inside its package. scikit-learn is optional (it is in kcomp's test extra).
"""

import numpy as np

from kcomp.errors import ArgumentError, KcompError


def load_data(test_split=0.2, seed=113):
    """((x_train, y_train), (x_test, y_test)): the digits shuffled by `seed`, a share `test_split` held out."""
    if isinstance(test_split, bool) or not isinstance(test_split, (int, float)) or not 0 <= test_split < 1:
        raise ArgumentError(f"digits.load_data: Received: test_split={test_split!r}. Expected a number in [0, 1).")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise KcompError("kcomp.datasets.digits reads the digits bundled with scikit-learn, which is not installed: "
                         "pip install scikit-learn") from None
    bunch = load_digits()
    x, y = bunch.images.astype(np.uint8), bunch.target.astype(np.uint8)
    order = np.arange(len(x))
    np.random.RandomState(seed).shuffle(order)
    x, y = x[order], y[order]
    cut = int(len(x) * (1 - test_split))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
