"""kcomp.utils.image_dataset_from_directory on a tiny folder of PNGs made here: Keras's listing,
labels, split and errors, images resized as tf.image.resize does, and fit reading it."""

import sys

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import ArgumentError, KcompError
from kcomp.utils import image_dataset_from_directory

Image = pytest.importorskip("PIL.Image")

SIZES = {"cats": [(7, 5), (6, 6), (9, 4)], "dogs": [(5, 8), (6, 6)], "owls": [(4, 4)]}


@pytest.fixture
def folder(tmp_path):
    """Three class folders of random RGB PNGs of ragged sizes (and a text file that is skipped)."""
    rng = np.random.default_rng(7)
    pixels = {}
    for name, sizes in SIZES.items():
        (tmp_path / name).mkdir()
        for i, (h, w) in enumerate(sizes):
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            path = tmp_path / name / f"{i}.png"
            Image.fromarray(image).save(path)
            pixels[str(path)] = image
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    return tmp_path, pixels


def test_lists_classes_and_files_as_keras(folder, capsys):
    root, pixels = folder
    data = image_dataset_from_directory(root, batch_size=4, image_size=(6, 6), shuffle=False)
    assert "Found 6 files belonging to 3 classes." in capsys.readouterr().out
    assert data.class_names == ["cats", "dogs", "owls"] and len(data) == 2
    assert [p.split("/")[-2:] for p in data.file_paths] == [
        ["cats", "0.png"], ["cats", "1.png"], ["cats", "2.png"], ["dogs", "0.png"], ["dogs", "1.png"], ["owls", "0.png"]]
    images, labels = data[0]
    assert images.shape == (4, 6, 6, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 0, 1])
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(images[1], pixels[data.file_paths[1]])  # 6x6 already: the pixels as they are
    assert data[1][0].shape == (2, 6, 6, 3)  # the last batch is partial


def test_resize_matches_half_pixel_bilinear(folder):
    """tf.image.resize's bilinear (half-pixel centres, no antialias) is torch's align_corners=False."""
    root, pixels = folder
    data = image_dataset_from_directory(root, batch_size=6, image_size=(3, 5), shuffle=False, verbose=False)
    images, _ = data[0]
    source = torch.tensor(pixels[data.file_paths[0]], dtype=torch.float64).permute(2, 0, 1)[None]
    want = torch.nn.functional.interpolate(source, size=(3, 5), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    np.testing.assert_allclose(images[0], want.numpy(), rtol=1e-5, atol=1e-3)
    nearest = image_dataset_from_directory(root, batch_size=6, image_size=(3, 3), shuffle=False, verbose=False,
                                           interpolation="nearest", color_mode="grayscale")[0][0]
    assert nearest.shape == (6, 3, 3, 1)
    gray = np.asarray(Image.open(data.file_paths[0]).convert("L"), dtype=np.float32)
    assert set(np.unique(nearest[0])) <= set(np.unique(gray))  # nearest picks pixels, never blends them


@pytest.mark.parametrize("mode, shape, dtype", [("categorical", (6, 3), np.float32), ("int", (6,), np.int32)])
def test_label_modes(folder, mode, shape, dtype):
    root, _ = folder
    _, labels = image_dataset_from_directory(root, label_mode=mode, batch_size=6, image_size=(4, 4), shuffle=False,
                                             verbose=False)[0]
    assert labels.shape == shape and labels.dtype == dtype
    ids = labels.argmax(-1) if mode == "categorical" else labels
    np.testing.assert_array_equal(ids, [0, 0, 0, 1, 1, 2])
    unlabeled = image_dataset_from_directory(root, labels=None, batch_size=6, image_size=(4, 4), verbose=False)[0]
    assert len(unlabeled) == 1 and unlabeled[0].shape == (6, 4, 4, 3)


def test_validation_split_is_keras_seeded_shuffle_then_split(folder):
    root, _ = folder
    train, val = image_dataset_from_directory(root, batch_size=2, image_size=(4, 4), seed=11, validation_split=0.4,
                                              subset="both", verbose=False)
    assert len(train.file_paths) == 4 and len(val.file_paths) == 2
    assert not set(train.file_paths) & set(val.file_paths)
    every = image_dataset_from_directory(root, batch_size=2, image_size=(4, 4), shuffle=False, verbose=False).file_paths
    order = np.array(every)
    np.random.RandomState(11).shuffle(order)  # Keras's shuffle of the file list, before the split
    assert train.file_paths + val.file_paths == list(order)


def test_fit_reads_it(folder):
    root, _ = folder
    data = image_dataset_from_directory(root, label_mode="categorical", batch_size=4, image_size=(5, 5), seed=1,
                                        verbose=False)
    model = kcomp.Sequential([kcomp.Input((5, 5, 3)), kcomp.layers.Flatten(), kcomp.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(data, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert model.predict(data, verbose=0).shape == (6, 3)


def test_errors(folder, monkeypatch):
    root, _ = folder
    with pytest.raises(ArgumentError, match="seed"):
        image_dataset_from_directory(root, validation_split=0.5, subset="training")
    with pytest.raises(ArgumentError, match="binary"):
        image_dataset_from_directory(root, label_mode="binary")
    with pytest.raises(ArgumentError, match="class_names"):
        image_dataset_from_directory(root, class_names=["cats", "dogs"])
    with pytest.raises(ArgumentError, match="interpolation='lanczos3'"):
        image_dataset_from_directory(root, interpolation="lanczos3")
    with pytest.raises(ArgumentError, match="No images found"):
        image_dataset_from_directory(root / "owls")  # images, but no class folders to infer labels from
    monkeypatch.setitem(sys.modules, "PIL", None)  # Pillow not installed: its import fails
    with pytest.raises(KcompError, match="pip install pillow"):
        image_dataset_from_directory(root)
