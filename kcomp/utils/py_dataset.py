"""Keras's PyDataset (also exported as Sequence): a data set of batches a model reads by index.

A subclass implements `__len__` (or `num_batches`, None for an infinite data set) and
`__getitem__(index)` returning (x,), (x, y) or (x, y, sample_weight) for batch `index`; fit,
evaluate and predict read it on background threads (kcomp/training/prefetch.py), `workers` of
them, up to `max_queue_size` batches ahead, and call on_epoch_begin / on_epoch_end around
each epoch. Keras's signature and properties, so a Keras subclass runs with the import changed.
"""

import warnings


def _setting(name: str) -> property:
    """A setting read (with Keras's warning if the subclass skipped PyDataset.__init__) and set."""
    private = f"_{name}"

    def read(self):
        self._warn_if_super_not_called()
        return getattr(self, private)

    def write(self, value):
        setattr(self, private, value)

    return property(read, write)


class PyDataset:
    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        # Keras's defaults, and Keras's warning, for a subclass whose __init__ skipped ours.
        if all(hasattr(self, name) for name in ("_workers", "_use_multiprocessing", "_max_queue_size")):
            return
        self.__dict__.setdefault("_workers", 1)
        self.__dict__.setdefault("_use_multiprocessing", False)
        self.__dict__.setdefault("_max_queue_size", 10)
        warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in its constructor. "
                      "`**kwargs` can include `workers`, `use_multiprocessing`, `max_queue_size`. Do not pass "
                      "these arguments to `fit()`, as they will be ignored.", stacklevel=3)

    # Keras's settings, read by fit's data feeding: the threads reading batches, whether in processes, and
    # how many batches are read ahead.
    workers = _setting("workers")
    use_multiprocessing = _setting("use_multiprocessing")
    max_queue_size = _setting("max_queue_size")

    def __getitem__(self, index):
        """The batch at position `index`: (x,), (x, y) or (x, y, sample_weight)."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__(index), returning the batch at index.")

    def __iter__(self):
        count = self.num_batches
        index = 0
        while count is None or index < count:
            yield self[index]
            index += 1

    @property
    def num_batches(self):
        """The number of batches, or None for an infinite data set (read from __len__ by default)."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError("You need to implement the `num_batches` property:\n\n"
                                  "@property\ndef num_batches(self):\n  return ...")

    def on_epoch_begin(self):
        """Called at the beginning of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""


Sequence = PyDataset  # Keras 3 exports the same class under both names
