"""Find a data set's files on this machine; kcomp never downloads them.

Each loader describes where its data set sits inside a data folder (`Place`: a file such
as `mnist.npz`, or a folder such as `fashion-mnist/` and the files it must hold) and where
Keras fetches it. `locate` looks for it in this order:

1. the `path` the caller gave, when it exists;
2. the kcomp data folder: $KCOMP_DATA_DIR, else ~/.kcomp/datasets;
3. Keras's cache folders ($KERAS_HOME/datasets or ~/.keras/datasets, then /tmp/.keras/datasets),
   so a file that `keras.datasets.*.load_data()` downloaded is found where Keras left it.

When nothing is found the KcompError names every folder looked in, the exact file names
expected, and Keras's address for fetching them on a machine with a network.
"""

from dataclasses import dataclass
from pathlib import Path

from kcomp import config
from kcomp.errors import KcompError

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # Keras's folder of data set files


@dataclass(frozen=True)
class Place:
    """Where a data set may sit inside a data folder: a file, or a folder holding `members`."""

    name: str                      # relative to a data folder ("mnist.npz", "fashion-mnist")
    members: tuple[str, ...] = ()  # a folder's files, every one needed; empty: `name` is a file

    def missing(self, path: Path) -> list[str]:
        """What `path` lacks to be this place: [] when it is complete."""
        if not self.members:
            return [] if path.is_file() else [self.name]
        if not path.is_dir():
            return [self.name + "/"]
        return [m for m in self.members if not (path / m).is_file()]

    def describe(self) -> str:
        if not self.members:
            return self.name
        return f"the folder {self.name}/ holding {', '.join(self.members)}"


@dataclass(frozen=True)
class DataSet:
    """One data set's files as Keras keeps them, and how to get them."""

    function: str                # "mnist.load_data": keras.datasets.mnist.load_data() downloads the files
    places: tuple[Place, ...]    # tried in each folder, in order
    fetch: str                   # "fetch it from https://...", said in the error


def locate(data: DataSet, path=None) -> Path:
    """The data set's file or folder. `path`: an existing file or folder is used as it is; a bare
    name (Keras's `path="mnist.npz"`) is looked for in the data folders."""
    places = data.places
    if path is not None:
        given = Path(path).expanduser()
        chosen = _as_place(data, given)
        if given.exists():
            if given.is_dir() != bool(chosen.members):
                kind, want = ("folder", f"a file such as {chosen.name}") if given.is_dir() else \
                    ("file", f"a folder holding {', '.join(chosen.members)}")
                raise KcompError(f"{given} is a {kind}; {data.function}(path=...) takes {want}.")
            missing = chosen.missing(given)
            if missing:
                raise KcompError(f"{given} is not what {data.function} reads: it lacks {', '.join(missing)}.")
            return given
        if len(given.parts) > 1:
            raise KcompError(f"{given} does not exist. Give the path of {chosen.describe()}, "
                             f"or a bare file name to look for in {_folders()}.")
        places = (chosen,)
    partial = []
    for folder in config.dataset_dirs():
        for place in places:
            candidate = folder / place.name
            missing = place.missing(candidate)
            if not missing:
                return candidate
            if candidate.exists():
                partial.append(f"{candidate} lacks {', '.join(missing)}")
    wanted = _describe_all(places)
    found = f" Found {'; '.join(partial)}." if partial else ""
    raise KcompError(
        f"{data.function.split('.')[0]} data is not on this machine, and kcomp does not download data sets: looked for "
        f"{wanted} in {_folders()}.{found} Put it in {config.data_dir()} (the kcomp data folder; set KCOMP_DATA_DIR "
        f"to use another): {data.fetch}, or run keras.datasets.{data.function}() once on a machine with "
        f"a network and copy what it saves in ~/.keras/datasets. Or pass its path: {data.function}(path=...)."
    )


def _as_place(data: DataSet, given: Path) -> Place:
    """The place a user's path stands for: the one of that name, else the first of its kind (file or folder)."""
    for place in data.places:
        if place.name == given.name:
            return place
    same_kind = [p for p in data.places if bool(p.members) == given.is_dir()] if given.exists() else []
    return Place(given.name, (same_kind or data.places)[0].members)


def _describe_all(places) -> str:
    """The places, those of the same files said once: "the folder a/ or b/ holding x, y; or c.tar.gz"."""
    names_by_members = {}
    for place in places:
        names_by_members.setdefault(place.members, []).append(place.name)
    texts = []
    for members, names in names_by_members.items():
        if members:
            texts.append(f"the folder {' or '.join(name + '/' for name in names)} holding {', '.join(members)}")
        else:
            texts.append(" or ".join(names))
    return "; or ".join(texts)


def _folders() -> str:
    return ", ".join(str(folder) for folder in config.dataset_dirs())
