"""CIFAR-10 (32x32 colour images in 10 classes), as keras.datasets.cifar10 gives it.

The data is the folder `cifar-10-batches-py` from the archive cifar-10-python.tar.gz: five
training batches and a test batch, each a Python 2 pickle of a dict whose b"data" is a
(10000, 3072) uint8 array (each row the red, green and blue 32x32 planes) and b"labels" a list
of ints. The pickles are read by kcomp.datasets.safe_pickle, which builds numpy arrays and
plain values and refuses any other global the file names, so a file cannot run code.
`load_data` returns x_train (50000, 32, 32, 3) and x_test (10000, 32, 32, 3) uint8 images,
channels last (Keras 3's default image_data_format, the only layout kcomp uses), and
y_train (50000, 1), y_test (10000, 1) uint8 labels, as Keras does.

kcomp does not download. It finds, in the data folders (kcomp.datasets.locate): the
extracted folder, where Keras 2 kept it (cifar-10-batches-py/) or Keras 3 keeps it
(cifar-10-batches-py-target/cifar-10-batches-py/), or the archive itself, read in place.
"""

import tarfile
from pathlib import Path, PurePosixPath

import numpy as np

from kcomp.datasets.locate import DataSet, Place, locate
from kcomp.datasets.safe_pickle import load_pickle
from kcomp.errors import KcompError

ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # where Keras fetches it
FOLDER = "cifar-10-batches-py"
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCHES = (*TRAIN, "test_batch")
DATA = DataSet(
    "cifar10.load_data",
    (Place(FOLDER, BATCHES), Place(f"cifar-10-batches-py-target/{FOLDER}", BATCHES),
     Place("cifar-10-python.tar.gz"), Place("cifar-10-batches-py.tar.gz")),
    f"fetch {ORIGIN} and leave the archive as it is, or extract it there (tar xzf)",
)
PIXELS = 3 * 32 * 32


def load_data(path=None):
    """((x_train, y_train), (x_test, y_test)). `path` (Keras's loader has none): the folder
    cifar-10-batches-py, or the archive cifar-10-python.tar.gz; by default both are looked for."""
    found = locate(DATA, path)
    batches = _read_folder(found) if found.is_dir() else _read_archive(found)
    x_train = np.concatenate([batches[name][0] for name in TRAIN])
    y_train = np.concatenate([batches[name][1] for name in TRAIN])
    x_test, y_test = batches["test_batch"]
    return (x_train, y_train.reshape(-1, 1)), (x_test, y_test.reshape(-1, 1))


def _read_folder(folder: Path) -> dict:
    batches = {}
    for name in BATCHES:
        with open(folder / name, "rb") as f:
            batches[name] = read_batch(f, folder / name)
    return batches


def _read_archive(archive: Path) -> dict:
    """The batches of the archive's cifar-10-batches-py/, read from it without extracting anything."""
    batches = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if member.isfile() and name.parent.name == FOLDER and name.name in BATCHES:
                    batches[name.name] = read_batch(tar.extractfile(member), f"{archive}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise KcompError(f"cannot read {archive}: {e}. Expected Keras's CIFAR-10 archive, {ORIGIN}.") from None
    missing = [name for name in BATCHES if name not in batches]
    if missing:
        raise KcompError(f"{archive} lacks {FOLDER}/{', '.join(missing)}; expected Keras's CIFAR-10 archive, {ORIGIN}.")
    return batches


def read_batch(stream, where) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, labels (N,) uint8) from one pickled batch, as Keras's load_batch reads it."""
    batch = load_pickle(stream, str(where), encoding="bytes")  # Python 2 strings come back as bytes, as in Keras
    if not isinstance(batch, dict):
        raise KcompError(f"{where} holds a {type(batch).__name__}; expected a CIFAR batch (a dict of data and labels).")
    batch = {key.decode("utf-8", "replace") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS):
        shape = getattr(data, "shape", None)
        raise KcompError(f"{where}: its data is {type(data).__name__} {shape}; expected a (N, {PIXELS}) uint8 array.")
    labels = np.asarray(labels if isinstance(labels, (list, np.ndarray)) else [])
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (labels.size and not 0 <= labels.min() <= labels.max() <= 255):
        raise KcompError(f"{where}: its labels are not {len(data)} integers 0-255, one per image.")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # channel planes -> channels last
    return np.ascontiguousarray(images), labels.astype(np.uint8)
