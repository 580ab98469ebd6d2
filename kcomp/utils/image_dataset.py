"""Keras's image_dataset_from_directory, as a PyDataset fit, evaluate and predict read.

    main_directory/
        class_a/ a_image_1.jpg, a_image_2.png, ...
        class_b/ b_image_1.jpg, ...

Files are listed as Keras lists them (class folders in alphanumeric order, or `class_names`'s;
files sorted within each; .bmp .gif .jpeg .jpg .png), shuffled with numpy's RandomState(seed) as
Keras shuffles them, so a seed splits the same files into training and validation as in Keras.
Images are read and decoded when their batch is read (on the prefetch thread), so a folder
larger than memory streams; each is resized to `image_size` as tf.image.resize does (bilinear
or nearest, half-pixel centres, no antialiasing) and given as float32 in [0, 255], NHWC.
Pillow reads the files: an optional dependency (`pip install pillow`).
"""

import os

import numpy as np
import torch

from kcomp.errors import ArgumentError, KcompError
from kcomp.utils.py_dataset import PyDataset

FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CHANNELS = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}
# Keras's interpolation name -> torch's mode computing the same (tf.image.resize, half-pixel centres).
INTERPOLATIONS = {"bilinear": "bilinear", "nearest": "nearest-exact"}
LABEL_MODES = ("int", "categorical", "binary", None)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise KcompError("image_dataset_from_directory reads images with Pillow, which is not installed. "
                         "Run `pip install pillow` (or `pip install kcomp[test]`).") from None
    return Image


def image_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None, color_mode="rgb",
                                 batch_size=32, image_size=(256, 256), shuffle=True, seed=None, validation_split=None,
                                 subset=None, interpolation="bilinear", follow_links=False, crop_to_aspect_ratio=False,
                                 pad_to_aspect_ratio=False, data_format=None, verbose=True):
    """The images under `directory` in batches of (images, labels), as Keras 3 makes them; a
    PyDataset with `.class_names` and `.file_paths` (two of them for subset="both")."""
    image = _pillow()
    _check(labels, label_mode, class_names, color_mode, batch_size, image_size, interpolation, validation_split, subset,
           shuffle, seed, crop_to_aspect_ratio, pad_to_aspect_ratio, data_format)
    paths, ids, class_names = _index(directory, labels, class_names, follow_links)
    if label_mode == "binary" and len(class_names) != 2:
        raise ArgumentError(f'Received: label_mode="binary" for {len(class_names)} classes {class_names}; binary labels '
                            'need exactly 2 classes. Use label_mode="int" or "categorical".')
    if verbose:
        print(f"Found {len(paths)} files" + (f" belonging to {len(class_names)} classes." if labels is not None else "."))
    if shuffle:
        seed = np.random.randint(1e6) if seed is None else seed
        np.random.RandomState(seed).shuffle(paths)  # Keras shuffles both lists with the same seed
        np.random.RandomState(seed).shuffle(ids)
    sets = {}
    held_out = int(validation_split * len(paths)) if validation_split else 0
    if subset in ("training", "both", None):
        sets["training"] = (paths[: len(paths) - held_out], ids[: len(ids) - held_out])
    if subset in ("validation", "both"):
        sets["validation"] = (paths[len(paths) - held_out :], ids[len(ids) - held_out :])
    made = []
    for name, (files, file_ids) in sets.items():
        if verbose and validation_split:
            print(f"Using {len(files)} files for {name}.")
        made.append(ImageFolderDataset(image, files, file_ids if labels is not None else None, class_names, label_mode,
                                       color_mode, batch_size, tuple(image_size), interpolation))
    return tuple(made) if subset == "both" else made[0]


def _check(labels, label_mode, class_names, color_mode, batch_size, image_size, interpolation, validation_split, subset,
           shuffle, seed, crop_to_aspect_ratio, pad_to_aspect_ratio, data_format):
    if not (labels in ("inferred", None) or isinstance(labels, (list, tuple))):
        raise ArgumentError(f'Received: labels={labels!r}. Expected "inferred", None, or a list of integer labels.')
    if label_mode not in LABEL_MODES:
        raise ArgumentError(f"Received: label_mode={label_mode!r}. Expected one of {list(LABEL_MODES)}.")
    if class_names is not None and labels != "inferred":
        raise ArgumentError('class_names is only valid with labels="inferred", as in Keras.')
    if color_mode not in CHANNELS:
        raise ArgumentError(f"Received: color_mode={color_mode!r}. Expected one of {list(CHANNELS)}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ArgumentError(f"Received: batch_size={batch_size!r}. kcomp gives images in batches: pass a positive integer.")
    if len(tuple(image_size)) != 2 or any(not isinstance(d, int) or d <= 0 for d in image_size):
        raise ArgumentError(f"Received: image_size={image_size!r}. Expected (height, width), two positive integers.")
    if interpolation not in INTERPOLATIONS:
        raise ArgumentError(f"Received: interpolation={interpolation!r}. kcomp resizes with {sorted(INTERPOLATIONS)} "
                            "(as tf.image.resize computes them); resize the files beforehand for another method.")
    if crop_to_aspect_ratio or pad_to_aspect_ratio:
        raise ArgumentError("crop_to_aspect_ratio and pad_to_aspect_ratio are not supported by kcomp; images are resized "
                            "to image_size as they are. Crop or pad the files beforehand.")
    if data_format not in (None, "channels_last"):
        raise ArgumentError(f"Received: data_format={data_format!r}. kcomp gives images channels-last (NHWC).")
    if subset not in (None, "training", "validation", "both"):
        raise ArgumentError(f'Received: subset={subset!r}. Expected "training", "validation", "both" or None.')
    if (subset is None) != (not validation_split):
        raise ArgumentError("validation_split and subset go together, as in Keras: give both or neither. "
                            f"Received: validation_split={validation_split!r}, subset={subset!r}.")
    if validation_split and not 0 < validation_split < 1:
        raise ArgumentError(f"Received: validation_split={validation_split!r}. Expected a number in (0, 1).")
    if validation_split and shuffle and seed is None:
        raise ArgumentError("If using validation_split and shuffling the data, you must provide a seed argument, to "
                            "make sure that there is no overlap between the training and validation subset.")


def _index(directory, labels, class_names, follow_links):
    """(file paths, their class ids, the class names) as Keras's index_directory lists them."""
    if not os.path.isdir(directory):
        raise ArgumentError(f"Received: directory={directory!r}, which is not a folder.")
    folders = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    if labels != "inferred":
        folders = [""]  # every image under `directory`, one unlabeled set
    elif class_names is not None:
        if sorted(class_names) != folders:
            raise ArgumentError(f"The class_names passed did not match the names of the subdirectories of the target "
                                f"directory. Expected: {folders} (or some order of it), but received: {list(class_names)}.")
        folders = list(class_names)
    paths, ids = [], []
    for i, folder in enumerate(folders):
        files = []
        for root, _, names in os.walk(os.path.join(directory, folder), followlinks=follow_links):
            files += [os.path.join(root, n) for n in names if n.lower().endswith(FORMATS)]
        paths += sorted(files)
        ids += [i] * len(files)
    if isinstance(labels, (list, tuple)):
        if len(labels) != len(paths):
            raise ArgumentError(f"Expected the lengths of labels to match the number of files in the target directory. "
                                f"len(labels) is {len(labels)} while we found {len(paths)} files in {directory}.")
        ids = [int(l) for l in labels]
        folders = [str(c) for c in sorted(set(ids))]
    if not paths:
        raise ArgumentError(f"No images found in directory {directory}. Allowed formats: {FORMATS}")
    return paths, np.asarray(ids, dtype=np.int64), ([] if labels is None else folders)


class ImageFolderDataset(PyDataset):
    """Batches of images read from files when asked for: (images,) or (images, labels)."""

    def __init__(self, image, paths, ids, class_names, label_mode, color_mode, batch_size, image_size, interpolation):
        super().__init__()
        self._image, self.file_paths, self._ids, self.class_names = image, list(paths), ids, list(class_names)
        self._label_mode, self._mode = label_mode, CHANNELS[color_mode][0]
        self._batch_size, self._size, self._interpolation = batch_size, image_size, INTERPOLATIONS[interpolation]

    def __len__(self):
        return -(-len(self.file_paths) // self._batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of a data set of {len(self)} batches.")
        span = slice(index * self._batch_size, (index + 1) * self._batch_size)
        images = np.stack([self._load(p) for p in self.file_paths[span]])
        if self._ids is None or self._label_mode is None:
            return (images,)
        return images, self._labels(self._ids[span])

    def _load(self, path) -> np.ndarray:
        with self._image.open(path) as file:
            pixels = np.asarray(file.convert(self._mode), dtype=np.float32)
        pixels = pixels.reshape(*pixels.shape[:2], -1)  # grayscale: (h, w) -> (h, w, 1)
        if pixels.shape[:2] == self._size:
            return pixels
        t = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        resized = torch.nn.functional.interpolate(t, size=self._size, mode=self._interpolation,
                                                  **({"align_corners": False} if self._interpolation == "bilinear" else {}))
        return resized[0].permute(1, 2, 0).numpy()

    def _labels(self, ids: np.ndarray) -> np.ndarray:
        if self._label_mode == "int":
            return ids.astype(np.int32)
        if self._label_mode == "binary":
            return ids.astype(np.float32).reshape(-1, 1)
        return np.eye(len(self.class_names), dtype=np.float32)[ids]
