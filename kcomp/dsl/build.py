"""Turn parsed .k models into kcomp models: the same layers, so the same IR as Python.

A sequential block becomes `Sequential([...])`; a graph block becomes
`Model(inputs, outputs)` where `y = conv2d(x, 16, kernel=3)` means
`y = Conv2D(16, kernel_size=3)(x)`: leading names that are defined values are
the layer's inputs, the rest are its arguments.
"""

import re
from contextlib import contextmanager
from dataclasses import dataclass, field

from kcomp.dsl import layer_table
from kcomp.dsl.syntax import Call, Ident, ModelDef, Pos, Statement
from kcomp.errors import KcompError, SourceError
from kcomp.layers import InputLayer
from kcomp.layers.tensors import flatten
from kcomp.models import Model, Sequential

COMPILE_SETTINGS = ("optimizer", "loss", "metrics", "loss_weights")


@dataclass
class Source:
    text: str
    filename: str

    def error(self, message: str, pos: Pos, hint: str = "") -> SourceError:
        return SourceError(message, self.filename, pos.line, pos.column, self.text, hint)

    @contextmanager
    def at(self, pos: Pos, what: str = ""):
        """Re-raise an error from inside as a SourceError pointing at `pos`.

        Besides KcompErrors, the errors a value from the file can provoke in
        Python code (a missing argument, a string where a number belongs, a
        size too large to allocate) are the file's fault too, and are
        reported at its line, never as a crash.
        """
        try:
            yield
        except SourceError:
            raise
        except KcompError as e:
            raise self.error(f"{what}{e}", pos) from None
        except (TypeError, ValueError, OverflowError, RuntimeError, MemoryError) as e:
            message = re.sub(r"[\w.<>]*__init__\(\) ", "", str(e)).strip() or type(e).__name__
            raise self.error(f"{what}{message}", pos) from None


@dataclass
class CompileConfig:
    """The compile section, kept as data for `kcomp fit` (names are checked by training)."""

    settings: dict = field(default_factory=dict)


def plain(value, source: Source, arg: str = ""):
    """A syntax value as a Python value (words become strings)."""
    if isinstance(value, Ident):
        return value.name
    if isinstance(value, tuple):
        return tuple(plain(v, source, arg) for v in value)
    if isinstance(value, list):
        return [plain(v, source, arg) for v in value]
    if isinstance(value, Call) and arg == "layer":  # a wrapper's layer: time_distributed(dense(8))
        return make_layer(value, list(value.args), source)
    if isinstance(value, Call):
        args = [plain(v, source) for v in value.args]
        kwargs = {k: plain(v, source) for k, v, _ in value.kwargs}
        with source.at(value.pos):
            return layer_table.convert_nested(arg, value.name, args, kwargs)
    return value


def layer_kwargs(cls, call: Call, args: list, source: Source) -> dict:
    """Map a call's positional and keyword arguments onto `cls`'s arguments."""
    known = layer_table.parameters(cls)
    positional = layer_table.positional_parameters(cls)
    if len(args) > len(positional):
        raise source.error(
            f"{call.name}() takes at most {len(positional)} positional argument(s) "
            f"({', '.join(positional) or 'none'}), received {len(args)}",
            call.pos,
        )
    kwargs = {name: plain(value, source, name) for name, value in zip(positional, args)}
    for name, value, pos in call.kwargs:
        target = layer_table.ARG_ALIASES.get(name, name) if name not in known else name
        if target not in known:
            options = [*known, *(a for a, full in layer_table.ARG_ALIASES.items() if full in known)]
            raise source.error(f"{call.name}() has no argument {name!r}.{layer_table.suggest(name, options)}", pos)
        if target in kwargs:
            raise source.error(f"{call.name}(): argument {target!r} is given twice", pos)
        kwargs[target] = plain(value, source, target)
    return kwargs


def make_layer(call: Call, args: list, source: Source):
    with source.at(call.pos):
        cls = layer_table.lookup_layer(call.name)
    kwargs = layer_kwargs(cls, call, args, source)
    with source.at(call.pos, f"{call.name}(): "):
        return cls(**kwargs)


def make_input(call: Call, source: Source) -> InputLayer:
    """input(28, 28, 1) or input(shape=(28, 28, 1), dtype=int32)."""
    kwargs = {}
    for name, value, pos in call.kwargs:
        if name not in layer_table.INPUT_ARGS:
            raise source.error(f"input() has no argument {name!r}.{layer_table.suggest(name, layer_table.INPUT_ARGS)}", pos)
        kwargs[name] = plain(value, source)
    if call.args:
        if "shape" in kwargs:
            raise source.error("input(): give the shape by position or as shape=..., not both", call.pos)
        kwargs["shape"] = tuple(plain(v, source) for v in call.args)
    with source.at(call.pos, "input(): "):
        return InputLayer(**kwargs)


def compile_config(stmt: Statement, source: Source) -> CompileConfig:
    settings = {}
    for name, value, pos in stmt.settings:
        if name not in COMPILE_SETTINGS:
            raise source.error(f"compile has no setting {name!r}.{layer_table.suggest(name, COMPILE_SETTINGS)}", pos)
        if isinstance(value, Call):  # optimizer=adam(learning_rate=0.01)
            value = {"name": value.name, "args": [plain(v, source) for v in value.args],
                     "kwargs": {k: plain(v, source) for k, v, _ in value.kwargs}}
        else:
            value = plain(value, source)
        settings[name] = value
    return CompileConfig(settings)


def build_sequential(model_def: ModelDef, source: Source) -> Sequential:
    model = Sequential(name=model_def.name)
    model.compile_config = CompileConfig()
    for stmt in model_def.statements:
        if stmt.kind == "compile":
            model.compile_config = compile_config(stmt, source)
        elif stmt.kind != "layer":
            raise source.error(
                f"'{'output' if stmt.kind == 'output' else 'name = ...'}' needs a graph block; a model block lists "
                "layers one after another", stmt.pos,
                hint=f"write `graph {model_def.name} {{ ... }}` for named values",
            )
        elif stmt.call.name == "input":
            layer = make_input(stmt.call, source)
            with source.at(stmt.call.pos):
                model.add(layer)
        else:
            layer = make_layer(stmt.call, stmt.call.args, source)
            with source.at(stmt.call.pos):
                model.add(layer)
    return model


def build_graph(model_def: ModelDef, source: Source) -> Model:
    values: dict[str, object] = {}
    inputs, outputs = [], None
    config = CompileConfig()
    for stmt in model_def.statements:
        if stmt.kind == "compile":
            config = compile_config(stmt, source)
        elif stmt.kind == "layer":
            raise source.error(
                f"in a graph, name the result: `y = {stmt.call.name}(...)`", stmt.pos,
                hint="a model block lists layers without names; a graph block names every value",
            )
        elif stmt.kind == "output":
            missing = [n for n in stmt.targets if n not in values]
            if missing:
                raise source.error(f"output names undefined value {missing[0]!r}.{layer_table.suggest(missing[0], values)}", stmt.pos)
            outputs = [values[n] for n in stmt.targets]
        else:
            results = _assign(stmt, values, inputs, source)
            if len(results) != len(stmt.targets):
                raise source.error(
                    f"{stmt.call.name}(...) returns {len(results)} value(s), but {len(stmt.targets)} name(s) are assigned",
                    stmt.pos,
                )
            for name, value in zip(stmt.targets, results):
                if name in values:
                    raise source.error(f"{name!r} is already defined; each name is assigned once", stmt.pos)
                values[name] = value
    if outputs is None:
        raise source.error(f"graph {model_def.name} has no `output` line", model_def.pos, hint="end it with e.g. `output y`")
    with source.at(model_def.pos):
        model = Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model_def.name)
    model.compile_config = config
    return model


def _assign(stmt: Statement, values: dict, inputs: list, source: Source) -> list:
    call = stmt.call
    if call.name == "input":
        layer = make_input(call, source)
        inputs.append(layer.output)
        return [layer.output]
    args = list(call.args)
    layer_inputs = []
    while args and isinstance(args[0], Ident) and args[0].name in values:
        layer_inputs.append(values[args.pop(0).name])
    if not layer_inputs:
        first = args[0] if args else None
        near = layer_table.suggest(first.name, values) if isinstance(first, Ident) else ""
        raise source.error(
            f"{call.name}(...) has no input: its first argument must name a defined value.{near}", call.pos,
            hint=f"defined so far: {', '.join(values) or 'nothing (start with x = input(...))'}",
        )
    with source.at(call.pos):
        takes = layer_table.positional_parameters(layer_table.lookup_layer(call.name))
    for index, a in enumerate(args):
        # A name past the layer's own positional arguments can only be meant as an input.
        if isinstance(a, Ident) and (index >= len(takes) or layer_table.suggest(a.name, values)):
            raise source.error(
                f"unknown value {a.name!r}.{layer_table.suggest(a.name, values)}", a.pos,
                hint=f"inputs come first and must be defined above; defined so far: {', '.join(values)}",
            )
    layer = make_layer(call, args, source)
    with source.at(call.pos):
        out = layer(layer_inputs[0] if len(layer_inputs) == 1 else layer_inputs)
    return flatten(out)


def build_models(model_defs: list[ModelDef], source: Source) -> dict[str, Model]:
    models: dict[str, Model] = {}
    for model_def in model_defs:
        if model_def.name in models:
            raise source.error(f"a model named {model_def.name!r} is already defined in this file", model_def.pos)
        build = build_sequential if model_def.kind == "sequential" else build_graph
        models[model_def.name] = build(model_def, source)
    if not models:
        raise SourceError("the file defines no model", source.filename, 1, 1, source.text, "start one with `model NAME { ... }`")
    return models

