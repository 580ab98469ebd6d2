"""Dependencies point down: no kcomp module imports from a layer above its own.

    base (errors, config, capture state, kcomp.support: files, arrays, disk cache)  <-  ir  <-
    kernels (the templates)  <-  passes  <-  codegen  <-  runtime  <-  ops (weights, kcomp.ops,
    activations, initializers)  <-  the Keras API (layers, models, training, losses, saving,
    kcomp.utils, ...)  <-  cli

Every import counts, those inside functions too: a lazy import is still a dependency. A module
may import anything in its own layer or below. Importing `kcomp.a.b.c` first runs the __init__ of
the packages kcomp.a and kcomp.a.b, so those count as dependencies too, and no module may sit in
a layer below a package that holds it (importing it runs that package).

A known limit: the package `kcomp` itself, the public facade that re-exports every layer, counts
as the top layer and is exempt. Python runs kcomp/__init__.py for every kcomp.* import, so in a
real process importing any kcomp module imports all of them; the layers here are about which
modules each module's own code needs, with the facade set aside.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Layers from the bottom, each a list of module-name prefixes; the longest matching prefix wins.
LAYERS = [
    ("base", ["kcomp.errors", "kcomp.config", "kcomp.triton_compat", "kcomp.random", "kcomp.support",
              "kcomp.capture"]),
    ("ir", ["kcomp.ir"]),
    # The templates (Triton code, launch, record with its grouping rule), which the fuser asks.
    ("kernels", ["kcomp.kernels"]),
    ("passes", ["kcomp.passes"]),
    ("codegen", ["kcomp.codegen"]),
    ("runtime", ["kcomp.runtime"]),
    # What a layer's call is written in: weights, the ops (tracing into the IR), Keras's
    # activations, initializers and regularizers, the session state (names, seed).
    ("ops", ["kcomp.variables", "kcomp.ops", "kcomp.session", "kcomp.backend", "kcomp.activations", "kcomp.initializers",
             "kcomp.regularizers", "kcomp.dtype_policies"]),
    ("api", ["kcomp.layers", "kcomp.models", "kcomp.training", "kcomp.losses", "kcomp.metrics",
             "kcomp.optimizers", "kcomp.callbacks", "kcomp.saving", "kcomp.utils", "kcomp.preprocessing",
             "kcomp.datasets", "kcomp.dsl", "kcomp.model_files", "kcomp.distribution",
             "kcomp.mixed_precision"]),
    ("cli", ["kcomp.cli", "kcomp.compiler", "kcomp.report", "kcomp.__main__", "kcomp.aot", "kcomp.bench"]),
]


def layer_of(module: str) -> int | None:
    if module == "kcomp":
        return len(LAYERS) - 1
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    return None if best is None else best[0]


def module_files() -> dict[str, Path]:
    files = {}
    for path in (ROOT / "kcomp").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    for path in (ROOT / "kernels").glob("*.py"):
        files[f"kcomp.kernels.{path.stem}".removesuffix(".__init__")] = path
    return files


def imports_of(path: Path, modules: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every kcomp module the file imports; `from kcomp.x import y` names
    kcomp.x.y when y is a module, else kcomp.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "kcomp"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "kcomp":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.append((node.lineno, child if child in modules else node.module))
    return found


MODULES = module_files()


def test_every_module_has_a_layer():
    assert not [m for m in MODULES if layer_of(m) is None]


def packages_of(module: str) -> list[str]:
    """The packages whose __init__ importing `module` runs, `kcomp` aside: kcomp.a.b.c -> kcomp.a, kcomp.a.b."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(2, len(parts))]


def with_packages(imports: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Each import with the package __init__ modules Python runs to reach it (packages_of)."""
    return [(line, name) for line, module in imports for name in [*packages_of(module), module]]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "kcomp"))
def test_no_module_below_its_package(module):
    own = layer_of(module)
    above = [f"{p} ({LAYERS[layer_of(p)][0]})" for p in packages_of(module) if layer_of(p) > own]
    assert not above, f"{module} ({LAYERS[own][0]}) sits in {', '.join(above)}, whose __init__ importing it runs"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "kcomp"))
def test_imports_point_down(module):
    own = layer_of(module)
    wrong = []
    for line, imported in with_packages(imports_of(MODULES[module], set(MODULES))):
        if (layer := layer_of(imported)) is not None and layer > own:
            wrong.append(f"line {line}: {imported} ({LAYERS[layer][0]}) is above {module} ({LAYERS[own][0]})")
    assert not wrong, "\n".join(wrong)
