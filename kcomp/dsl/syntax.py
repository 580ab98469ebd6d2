"""Parse .k text into a small syntax tree (grammar: kcomp/grammar/kcomp.lark).

Every failure becomes a SourceError with file:line:column, the line and a
caret; nothing else escapes, whatever bytes the file holds.
"""

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from lark import Lark, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from kcomp.errors import SourceError


@dataclass(frozen=True)
class Pos:
    line: int
    column: int


@dataclass(frozen=True)
class Ident:
    """A bare name used as a value: a layer input in a graph, else a word such as relu or same."""

    name: str
    pos: Pos


@dataclass
class Call:
    name: str
    args: list  # values: int, float, str, bool, None, tuple, list, Ident, Call
    kwargs: list  # (name, value, Pos) in source order
    pos: Pos


@dataclass
class Statement:
    kind: str  # "layer", "assign", "output" or "compile"
    pos: Pos
    call: Call | None = None
    targets: list[str] = field(default_factory=list)  # assign: the names defined; output: the names returned
    settings: list = field(default_factory=list)  # compile: (name, value, Pos)


@dataclass
class ModelDef:
    kind: str  # "sequential" or "graph"
    name: str
    statements: list[Statement]
    pos: Pos


WORDS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}

# How the grammar's terminals read in an error message.
TOKEN_NAMES = {
    "NAME": "a name", "SIGNED_NUMBER": "a number", "ESCAPED_STRING": "a string", "LPAR": "'('", "RPAR": "')'",
    "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "EQUAL": "'='",
    "MODEL": "'model'", "GRAPH": "'graph'", "OUTPUT": "'output'", "COMPILE": "'compile'", "$END": "end of file",
}


def _pos(meta_or_token) -> Pos:
    return Pos(meta_or_token.line, meta_or_token.column)


@v_args(meta=True)
class _ToSyntax(Transformer):
    def start(self, meta, models):
        return list(models)

    def sequential(self, meta, children):
        name, *statements = children
        return ModelDef("sequential", str(name), statements, _pos(name))

    def graph(self, meta, children):
        name, *statements = children
        return ModelDef("graph", str(name), statements, _pos(name))

    def layer(self, meta, children):
        return Statement("layer", _pos(meta), call=children[0])

    def assign(self, meta, children):
        targets, call = children
        return Statement("assign", _pos(meta), call=call, targets=targets)

    def targets(self, meta, names):
        return [str(n) for n in names]

    def output(self, meta, names):
        return Statement("output", _pos(meta), targets=[str(n) for n in names])

    def compile(self, meta, settings):
        return Statement("compile", _pos(meta), settings=list(settings))

    def setting(self, meta, children):
        name, value = children
        return (str(name), value, _pos(name))

    def call(self, meta, children):
        name, *args = children
        positional, keywords = [], []
        for a in args:
            if isinstance(a, _Keyword):
                if any(k[0] == a.name for k in keywords):
                    raise SourceError(f"argument {a.name!r} is given twice", "", a.pos.line, a.pos.column)
                keywords.append((a.name, a.value, a.pos))
            elif keywords:
                line, column = _value_pos(a, meta)
                raise SourceError("a positional argument follows a keyword argument", "", line, column)
            else:
                positional.append(a)
        return Call(str(name), positional, keywords, _pos(name))

    def keyword(self, meta, children):
        name, value = children
        return _Keyword(str(name), value, _pos(name))

    def number(self, meta, children):
        token = children[0]
        text = str(token)
        if any(c in text for c in ".eE"):
            value = float(text)
            if value in (float("inf"), float("-inf")):
                raise SourceError(f"number {text} is out of range", "", token.line, token.column)
            return value
        return int(text)

    def string(self, meta, children):
        token = children[0]
        try:
            text = json.loads(str(token))  # the grammar's strings are JSON strings
        except ValueError:
            raise SourceError("this string has an invalid escape (use \\\\ for a backslash)", "", token.line, token.column) from None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError("this string holds a lone surrogate (such as \\ud800), which is not text", "", token.line, token.column) from None
        return text

    def name(self, meta, children):
        token = children[0]
        if str(token) in WORDS:
            return WORDS[str(token)]
        return Ident(str(token), _pos(token))

    def tuple(self, meta, children):
        return tuple(children)

    def list(self, meta, children):
        return list(children)


@dataclass
class _Keyword:
    name: str
    value: object
    pos: Pos


def _value_pos(value, meta) -> tuple[int, int]:
    pos = getattr(value, "pos", None)
    if pos is not None:
        return pos.line, pos.column
    return meta.line, meta.column


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = resources.files("kcomp.grammar").joinpath("kcomp.lark").read_text()
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _expected(tokens) -> str:
    names = sorted({TOKEN_NAMES.get(t, t.lower()) for t in tokens})
    return "expected " + (names[0] if len(names) == 1 else "one of: " + ", ".join(names))


def _syntax_error(err: UnexpectedInput, text: str, filename: str) -> SourceError:
    line, column = getattr(err, "line", 0) or 0, getattr(err, "column", 0) or 0
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else "?"
        return SourceError(f"syntax error: unexpected character {char!r}", filename, line, column, text, _expected(err.allowed))
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        last = text.rstrip().splitlines() or [""]
        return SourceError(
            "syntax error: the file ends in the middle of a model", filename, max(len(last), 1), len(last[-1]) + 1,
            text, _expected(err.expected),
        )
    token = err.token
    return SourceError(f"syntax error: unexpected {str(token)!r}", filename, line, column, text, _expected(err.expected))


def parse(text: str, filename: str = "<string>") -> list[ModelDef]:
    """Parse a .k file's text into ModelDefs; raises SourceError on any problem."""
    if not isinstance(text, str):
        raise SourceError("a .k file must be text", filename, 0, 0)
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(err, text, filename) from None
    except (LarkError, RecursionError) as err:
        raise SourceError(f"cannot parse: {err}", filename, 1, 1, text) from None
    try:
        return _ToSyntax().transform(tree)
    except VisitError as err:
        inner = err.orig_exc
        if isinstance(inner, SourceError):
            raise SourceError(inner.message, filename, inner.line, inner.column, text, inner.hint) from None
        raise SourceError(f"cannot read this model: {inner}", filename, 1, 1, text) from None
    except RecursionError:
        raise SourceError("the file nests values too deeply", filename, 1, 1, text) from None

