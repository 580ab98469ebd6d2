"""Keras's data set loaders (`kcomp.datasets.imdb`), reading the files Keras keeps.

kcomp never downloads: a loader reads the file from Keras's cache folder (where
`keras.datasets.*.load_data` put it) or from a path you give, and says where to
put it when it is missing. Files are read without unpickling anything but arrays.
"""

from kcomp.datasets import imdb

__all__ = ["imdb"]
