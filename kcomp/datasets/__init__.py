"""Keras's data set loaders, reading the files Keras keeps, without a network.

`imdb`, `mnist`, `fashion_mnist` and `cifar10` read Keras's own files (imdb.npz and
imdb_word_index.json, mnist.npz, the fashion-mnist folder of IDX files, CIFAR-10's
folder of pickled batches or its archive) and return what keras.datasets.*.load_data
returns. kcomp never downloads: a loader uses the path you give, else looks in the kcomp
data folder ($KCOMP_DATA_DIR, default ~/.kcomp/datasets), then in Keras's cache folders
($KERAS_HOME/datasets or ~/.keras/datasets, /tmp/.keras/datasets), and when the data is
missing says where to put it and where Keras fetches it (kcomp/datasets/locate.py).
Files are read without unpickling anything but arrays (kcomp/datasets/safe_pickle.py).
`digits` splits scikit-learn's bundled 8x8 digits, and `imdb.write_synthetic` writes a
small learnable sentiment set in the IMDB format, for tests and examples.
"""

from kcomp.datasets import cifar10, digits, fashion_mnist, imdb, mnist

__all__ = ["cifar10", "digits", "fashion_mnist", "imdb", "mnist"]
