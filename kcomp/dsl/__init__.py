"""The .k model language: parse a file into kcomp models (never evaluating Python)."""

from pathlib import Path

from kcomp.dsl.build import CompileConfig, Source, build_models
from kcomp.dsl.syntax import parse
from kcomp.errors import SourceError


def loads(text: str, filename: str = "<string>") -> dict:
    """All models in `text`, by name, in file order."""
    return build_models(parse(text, filename), Source(text, filename))


def load(path) -> dict:
    """All models in the .k file at `path`, by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"the file is not UTF-8 text ({e.reason} at byte {e.start})", str(path), 1, 1) from None
    except OSError as e:
        raise SourceError(f"cannot read the file: {e.strerror}", str(path), 0, 0) from None
    return loads(text, str(path))


__all__ = ["CompileConfig", "load", "loads", "parse"]
