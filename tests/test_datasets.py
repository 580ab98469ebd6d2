"""kcomp.datasets reads Keras's own image data set files as Keras 3 does, with no network.

Each loader reads a small file written here in Keras's format, and its result is compared with
Keras 3's loader on the same file (Keras's get_file, which would check a hash and download, is
pointed at the local file). The search order (a given path, $KCOMP_DATA_DIR or ~/.kcomp/datasets,
Keras's cache folders), the errors that say where the files belong, and the pickle reader that
refuses code are checked too. IMDB: tests/test_datasets_imdb.py and tests/test_seed_document.py.
"""

import gzip
import pickle
import pickletools
import struct
import sys
import tarfile

import numpy as np
import pytest

from kcomp.datasets import cifar10, digits, fashion_mnist, mnist
from kcomp.errors import ArgumentError, KcompError


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """(the kcomp data folder, Keras's cache folder), both empty, set by KCOMP_DATA_DIR and KERAS_HOME."""
    ours, keras_home = tmp_path / "kcomp-data", tmp_path / "keras-home"
    ours.mkdir()
    (keras_home / "datasets").mkdir(parents=True)
    monkeypatch.setenv("KCOMP_DATA_DIR", str(ours))
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    return ours, keras_home / "datasets"


def images(rng, n, *shape):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8)


# MNIST: one .npz of uint8 arrays.

def write_mnist(path, seed=0):
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=images(rng, 9, 28, 28), y_train=rng.integers(0, 10, 9, dtype=np.uint8),
             x_test=images(rng, 5, 28, 28), y_test=rng.integers(0, 10, 5, dtype=np.uint8))


def test_mnist_reads_keras_mnist_npz_as_keras_does(folders, monkeypatch):
    pytest.importorskip("keras")
    from keras.src.datasets import mnist as keras_mnist

    write_mnist(folders[0] / "mnist.npz")
    monkeypatch.setattr(keras_mnist, "get_file", lambda *a, **k: str(folders[0] / "mnist.npz"))
    assert_same_split(mnist.load_data(), keras_mnist.load_data())
    (x_train, y_train), (x_test, _) = mnist.load_data()
    assert x_train.shape == (9, 28, 28) and x_test.shape == (5, 28, 28) and x_train.dtype == y_train.dtype == np.uint8


def assert_same_split(ours, theirs):
    for a, b in zip(ours, theirs):
        for mine, keras in zip(a, b):
            assert mine.dtype == keras.dtype and mine.shape == keras.shape
            np.testing.assert_array_equal(mine, keras)


# Fashion-MNIST: four gzipped IDX files in a folder fashion-mnist.

def write_idx(path, array):
    header = bytes((0, 0, 0x08, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for labels_name, images_name, n in ((fashion_mnist.FILES[0], fashion_mnist.FILES[1], 7),
                                        (fashion_mnist.FILES[2], fashion_mnist.FILES[3], 4)):
        write_idx(folder / labels_name, rng.integers(0, 10, n, dtype=np.uint8))
        write_idx(folder / images_name, images(rng, n, 28, 28))
    return folder


def test_fashion_mnist_reads_keras_idx_files_as_keras_does(folders, monkeypatch):
    pytest.importorskip("keras")
    from keras.src.datasets import fashion_mnist as keras_fashion

    folder = write_fashion_mnist(folders[1] / "fashion-mnist")  # where Keras keeps it
    monkeypatch.setattr(keras_fashion, "get_file", lambda fname, **k: str(folder / fname))
    assert_same_split(fashion_mnist.load_data(), keras_fashion.load_data())
    assert_same_split(fashion_mnist.load_data(path=folder), keras_fashion.load_data())
    (x_train, _), _ = fashion_mnist.load_data()
    x_train[0, 0, 0] = 1  # writable, unlike an array over the file's bytes


@pytest.mark.parametrize("damage, says", [(lambda raw: gzip.compress(raw[:-2]), "cut short"),
                                          (lambda raw: gzip.compress(b"\0\0\x0d\x01" + raw[4:]), "not an IDX file"),
                                          (lambda raw: raw, "cannot read")])  # not gzipped
def test_fashion_mnist_damaged_file_is_a_kcomp_error(tmp_path, damage, says):
    folder = write_fashion_mnist(tmp_path / "fashion-mnist")
    labels = folder / fashion_mnist.FILES[0]
    labels.write_bytes(damage(gzip.decompress(labels.read_bytes())))
    with pytest.raises(KcompError, match=says):
        fashion_mnist.load_data(path=folder)


# CIFAR-10: the folder cifar-10-batches-py of Python 2 pickles (or the archive holding it).

def python2_pickle(obj) -> bytes:
    """`obj` pickled as Python 2 pickled the CIFAR batches: protocol 2, bytes and str as Python 2
    strings (BINSTRING), numpy under numpy.core. (Python 3's protocol 2 would pickle bytes through
    _codecs.encode, which no CIFAR file names.)"""
    raw = pickle.dumps(obj, protocol=3)
    ops = list(pickletools.genops(raw))
    out = bytearray(b"\x80\x02")
    for (op, arg, start), (_, _, end) in zip(ops, [*ops[1:], (None, None, len(raw))]):
        if op.name == "PROTO":
            continue
        if op.name in ("SHORT_BINBYTES", "BINBYTES", "BINUNICODE", "SHORT_BINUNICODE"):
            data = arg if isinstance(arg, bytes) else arg.encode("latin-1")
            out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data
        else:
            out += raw[start:end].replace(b"numpy._core.", b"numpy.core.")
    return bytes(out)


def cifar_batch(rng, n):
    return {b"batch_label": b"a kcomp test batch", b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": images(rng, n, 3072), b"filenames": [b"img_%d.png" % i for i in range(n)]}


def write_cifar10(folder, seed=0, sizes=(3, 4, 2, 3, 5, 4)):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(cifar10.BATCHES, sizes):
        (folder / name).write_bytes(python2_pickle(cifar_batch(rng, n)))
    return folder


def test_cifar10_reads_keras_batches_as_keras_does(folders, monkeypatch):
    keras = pytest.importorskip("keras")
    from keras.src.datasets import cifar as keras_cifar
    from keras.src.datasets import cifar10 as keras_cifar10

    # Keras 3 keeps the extracted folder in cifar-10-batches-py-target/ of its cache.
    target = folders[1] / "cifar-10-batches-py-target"
    folder = write_cifar10(target / "cifar-10-batches-py")
    (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    assert x_train.shape == (3 + 4 + 2 + 3 + 5, 32, 32, 3) and y_train.shape == (17, 1) and x_test.shape == (4, 32, 32, 3)
    assert x_train.dtype == y_train.dtype == x_test.dtype == y_test.dtype == np.uint8

    # Each batch as Keras's load_batch reads it (channel planes), moved to channels last.
    starts = np.cumsum([0, 3, 4, 2, 3])
    for name, start in zip(cifar10.TRAIN, starts):
        data, labels = keras_cifar.load_batch(str(folder / name))
        np.testing.assert_array_equal(x_train[start:start + len(data)], data.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(y_train[start:start + len(data), 0], labels)

    # Keras's whole load_data expects 10000 images a batch: give it each small batch repeated to 10000.
    def tiled_batch(fpath):
        data, labels = keras_cifar.load_batch(fpath)
        return np.resize(data, (10000, *data.shape[1:])), np.resize(labels, 10000)

    monkeypatch.setattr(keras_cifar10, "get_file", lambda *a, **k: str(target))
    monkeypatch.setattr(keras_cifar10, "load_batch", tiled_batch)
    assert keras.backend.image_data_format() == "channels_last"
    (kx_train, ky_train), (kx_test, ky_test) = keras_cifar10.load_data()
    for i, (name, start) in enumerate(zip(cifar10.TRAIN, starts)):
        n = [3, 4, 2, 3, 5][i]
        for mine, theirs in ((x_train, kx_train), (y_train, ky_train)):
            assert mine.dtype == theirs.dtype and mine.shape[1:] == theirs.shape[1:]
            np.testing.assert_array_equal(mine[start:start + n], theirs[i * 10000:i * 10000 + n])
    np.testing.assert_array_equal(x_test, kx_test[:4])
    np.testing.assert_array_equal(y_test, ky_test[:4])
    assert y_test.shape[1:] == ky_test.shape[1:] and y_test.dtype == ky_test.dtype


def test_cifar10_reads_the_archive_in_place_and_the_keras2_folder(folders):
    folder = write_cifar10(folders[1] / "cifar-10-batches-py")  # Keras 2's place
    from_folder = cifar10.load_data()
    archive = folders[0] / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    assert_same_split(cifar10.load_data(), from_folder)  # the kcomp data folder's archive comes first
    assert_same_split(cifar10.load_data(path=archive), from_folder)
    with tarfile.open(folders[0] / "short.tar.gz", "w:gz") as tar:
        tar.add(folder / "test_batch", arcname="cifar-10-batches-py/test_batch")
    with pytest.raises(KcompError, match="lacks cifar-10-batches-py/data_batch_1"):
        cifar10.load_data(path=folders[0] / "short.tar.gz")


def test_cifar10_pickle_that_names_code_is_refused_and_runs_nothing(tmp_path):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py")
    canary = tmp_path / "canary"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {canary}",))

    batch = cifar_batch(np.random.default_rng(1), 3)
    batch[b"labels"] = Payload()
    (folder / "data_batch_3").write_bytes(python2_pickle(batch))
    with pytest.raises(KcompError, match=r"data_batch_3: its pickle names (os|posix)\.system; only numpy arrays"):
        cifar10.load_data(path=folder)
    assert not canary.exists()


@pytest.mark.parametrize("change, says", [({b"data": np.zeros((2, 5), np.uint8)}, "expected a .N, 3072. uint8 array"),
                                          ({b"labels": [1, 2]}, "not 3 integers"),
                                          ({b"labels": [1, 2, 300]}, "not 3 integers 0-255")])
def test_cifar10_batch_of_the_wrong_shape_is_a_kcomp_error(tmp_path, change, says):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py")
    batch = {**cifar_batch(np.random.default_rng(1), 3), **change}
    (folder / "test_batch").write_bytes(python2_pickle(batch))
    with pytest.raises(KcompError, match=says):
        cifar10.load_data(path=folder)


# Where the files are looked for, and what a missing one says.

def test_the_search_order_is_path_then_kcomp_data_dir_then_keras_cache(folders, tmp_path):
    ours, keras_cache = folders
    write_mnist(keras_cache / "mnist.npz", seed=1)
    from_keras = mnist.load_data()
    write_mnist(ours / "mnist.npz", seed=2)
    from_ours = mnist.load_data()
    assert not np.array_equal(from_ours[0][0], from_keras[0][0])
    write_mnist(tmp_path / "mine.npz", seed=3)
    given = mnist.load_data(path=tmp_path / "mine.npz")
    assert not np.array_equal(given[0][0], from_ours[0][0])
    (ours / "mnist.npz").unlink()
    assert_same_split(mnist.load_data(), from_keras)


def test_the_default_kcomp_data_folder_is_in_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("KCOMP_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".kcomp" / "datasets").mkdir(parents=True)
    write_mnist(tmp_path / ".kcomp" / "datasets" / "mnist.npz")
    (x_train, _), _ = mnist.load_data()
    assert x_train.shape == (9, 28, 28)


@pytest.mark.parametrize("load, names, origin", [
    (mnist.load_data, ["mnist.npz"], "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"),
    (fashion_mnist.load_data, ["fashion-mnist/", *fashion_mnist.FILES], "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"),
    (cifar10.load_data, ["cifar-10-batches-py/", "data_batch_1", "test_batch", "cifar-10-python.tar.gz"],
     "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
])
def test_missing_data_says_every_folder_the_file_names_and_where_keras_fetches_it(folders, load, names, origin):
    with pytest.raises(KcompError) as caught:
        load()
    message = str(caught.value)
    assert "does not download" in message and origin in message and "KCOMP_DATA_DIR" in message
    for folder in (*folders, "/tmp/.keras/datasets"):
        assert str(folder) in message
    for name in names:
        assert name in message


def test_a_folder_without_all_its_files_is_named_with_what_it_lacks(folders):
    folder = write_fashion_mnist(folders[0] / "fashion-mnist")
    (folder / fashion_mnist.FILES[3]).unlink()
    with pytest.raises(KcompError, match=f"{folder} lacks t10k-images-idx3-ubyte.gz"):
        fashion_mnist.load_data()
    with pytest.raises(KcompError, match="lacks t10k-images-idx3-ubyte.gz"):
        fashion_mnist.load_data(path=folder)


def test_a_given_path_that_does_not_exist_is_not_looked_for_elsewhere(folders, tmp_path):
    write_mnist(folders[0] / "mnist.npz")
    with pytest.raises(KcompError, match="does not exist"):
        mnist.load_data(path=tmp_path / "elsewhere" / "mnist.npz")
    (x_train, _), _ = mnist.load_data(path="mnist.npz")  # a bare name is looked for in the data folders
    assert len(x_train) == 9


def test_a_given_path_of_the_wrong_kind_says_what_the_loader_takes(tmp_path):
    write_mnist(tmp_path / "mnist.npz")
    with pytest.raises(KcompError, match=r"is a file; fashion_mnist\.load_data\(path=\.\.\.\) takes a folder holding train-labels"):
        fashion_mnist.load_data(path=tmp_path / "mnist.npz")
    with pytest.raises(KcompError, match=r"is a folder; mnist\.load_data\(path=\.\.\.\) takes a file such as"):
        mnist.load_data(path=tmp_path)


# Digits: scikit-learn's bundled 8x8 images, split as Keras splits.

def test_digits_are_sklearns_images_shuffled_and_split_as_keras_splits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    bunch = sklearn_datasets.load_digits()
    (x_train, y_train), (x_test, y_test) = digits.load_data(test_split=0.2, seed=7)
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8) and y_train.shape == (1437,)
    assert x_train.dtype == y_train.dtype == np.uint8 and x_train.max() == 16
    order = np.arange(1797)
    np.random.RandomState(7).shuffle(order)
    np.testing.assert_array_equal(np.concatenate([x_train, x_test]), bunch.images[order])
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), bunch.target[order])
    (everything, _), (none, _) = digits.load_data(test_split=0)
    assert len(everything) == 1797 and len(none) == 0


@pytest.mark.parametrize("test_split", [1, -0.1, "0.2", True])
def test_digits_test_split_out_of_range_is_an_argument_error(test_split):
    with pytest.raises(ArgumentError, match="test_split"):
        digits.load_data(test_split=test_split)


def test_digits_without_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(KcompError, match="pip install scikit-learn"):
        digits.load_data()

