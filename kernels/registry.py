"""Every kernel template by name, collected from the template modules' records (kernels/template.py).

A module of kcomp.kernels that defines TEMPLATES is a template module; the others (tiling,
random, autotune, ...) are shared pieces. Adding a template adds no line here.
"""

import importlib
import pkgutil

from kcomp.errors import GraphError
import kcomp.kernels as _package
from kcomp.kernels.template import Template


def _collect() -> dict[str, Template]:
    found: dict[str, Template] = {}
    for info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{_package.__name__}.{info.name}")
        for template in getattr(module, "TEMPLATES", ()):
            if template.name in found:
                raise RuntimeError(f"two templates named {template.name!r}: in {found[template.name].module} and {module.__name__}")
            found[template.name] = template
    return found


TEMPLATES: dict[str, Template] = _collect()


def get(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise GraphError(f"a kernel node names the template {name!r}, which kcomp does not have; "
                         f"its templates are {', '.join(sorted(TEMPLATES))}") from None
