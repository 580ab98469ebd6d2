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
    check_priorities(found.values())
    return found


def check_priorities(templates) -> None:
    """The fusion pass asks templates in priority order; two with one priority would leave which
    takes a node to the order modules happen to be found in."""
    priorities = [t.priority for t in templates]
    if len(set(priorities)) != len(priorities):
        ties = sorted(f"{t.name}={t.priority}" for t in templates if priorities.count(t.priority) > 1)
        raise RuntimeError(f"templates share a priority, so which takes a node first is undefined: {', '.join(ties)}")


TEMPLATES: dict[str, Template] = _collect()


def get(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise GraphError(f"a kernel node names the template {name!r}, which kcomp does not have; "
                         f"its templates are {', '.join(sorted(TEMPLATES))}") from None
