"""Load the models a file defines: a .k file (data, never executed), a Keras 3 `.keras`
archive (data too: kcomp/saving/archive.py, with its weights, compile config and
optimizer state), or a Python file.

Python convention: the file defines a function `build_model()` returning a
model, or a module-level variable `model`; failing both, every kcomp model
the module defines at top level is taken. Unlike a .k file, a Python file is
code and runs: load only files you trust.
"""

import runpy
from pathlib import Path

from kcomp import dsl
from kcomp.errors import KcompError
from kcomp.models import Model


def load_models(path) -> dict[str, Model]:
    path = Path(path)
    if path.suffix == ".py":
        return _load_python(path)
    if path.suffix == ".keras":
        from kcomp.saving.archive import load_model

        model = load_model(path)
        return {model.name: model}
    return dsl.load(path)


def _load_python(path: Path) -> dict[str, Model]:
    try:
        namespace = runpy.run_path(str(path), run_name="__kcomp_model__")
        if callable(namespace.get("build_model")):
            namespace = {**namespace, "model": namespace["build_model"]()}
    except KcompError:
        raise
    except SystemExit as e:
        raise KcompError(f"{path} called sys.exit({e.code!r}) while defining its model") from None
    except Exception as e:  # the user's code failed: say where, not "kcomp bug"
        raise KcompError(f"{path} raised {type(e).__name__}: {e}") from e
    if isinstance(namespace.get("model"), Model):
        found = [namespace["model"]]
    else:
        found = [v for v in namespace.values() if isinstance(v, Model)]
    if not found:
        raise KcompError(
            f"{path} defines no kcomp model: define `build_model()` returning one, or a variable `model`."
        )
    return {m.name: m for m in found}


def pick_model(models: dict[str, Model], name: str | None, path) -> Model:
    if name is None:
        if len(models) > 1:
            raise KcompError(f"{path} defines {len(models)} models ({', '.join(models)}); choose one with --model NAME.")
        return next(iter(models.values()))
    if name not in models:
        from difflib import get_close_matches

        near = get_close_matches(name, list(models), n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise KcompError(f"{path} has no model named {name!r} (it has {', '.join(models)}).{hint}")
    return models[name]
