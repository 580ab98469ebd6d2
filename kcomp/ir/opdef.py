"""The registry record: everything about one op, in one place.

An OpDef holds the op's attribute schema, its shape/dtype rule, its torch
reference implementation, its traits, and slots for the rules later stages
add (the VJP for autodiff, the kernel template it lowers to). A record that is
missing a required field, or whose fields have the wrong kind, fails at import.
"""

from dataclasses import dataclass
from typing import Any, Callable

from kcomp.errors import ArgumentError

REQUIRED = object()  # marker: the attribute has no default

TRAITS = frozenset(
    {
        "elementwise",  # output element i depends only on input elements i (after broadcasting)
        "unary",
        "binary",
        "activation",  # a Keras activation function
        "reduction",  # reduces over some axes
        "linear",  # matmul-like: the fusion anchor for epilogues
        "conv",
        "pool",
        "shape",  # moves data without arithmetic (reshape, transpose, concat)
        "normalization",
        "random",  # draws random numbers (dropout in training)
        "recurrent",  # whole-sequence recurrent cell
        "gather",
        "constant",
        "fused",  # a kernel node made by fusion
        "optimizer",  # updates parameters (the training step's last op)
        "collective",  # sums over the processes of a data-parallel job (the identity in one process)
    }
)


@dataclass(frozen=True)
class AttrSpec:
    """One attribute: the Python types it accepts, its default, allowed values."""

    types: tuple[type, ...]
    default: Any = REQUIRED
    choices: tuple | None = None
    doc: str = ""
    items: tuple[type, ...] | None = None  # for tuple attrs: the types each entry may have

    def check(self, op: str, name: str, value: Any) -> Any:
        if value is None and self.default is None:
            return None
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        if not ok:
            wanted = " or ".join(t.__name__ for t in self.types)
            raise ArgumentError(f"op {op}: Received: {name}={value!r}. Expected a {wanted}.")
        if self.items is not None and isinstance(value, tuple):
            bad = [v for v in value if not isinstance(v, self.items) or (isinstance(v, bool) and bool not in self.items)]
            if bad:
                wanted = " or ".join(t.__name__ for t in self.items)
                raise ArgumentError(f"op {op}: Received: {name}={value!r}. Every entry must be a {wanted}.")
        if self.choices is not None and value not in self.choices:
            raise ArgumentError(f"op {op}: Received: {name}={value!r}. Expected one of {list(self.choices)}.")
        return value


def attr(types, default=REQUIRED, choices=None, doc="", items=None) -> AttrSpec:
    if not isinstance(types, tuple):
        types = (types,)
    if items is not None and not isinstance(items, tuple):
        items = (items,)
    return AttrSpec(types, default, choices, doc, items)


@dataclass(frozen=True)
class OpDef:
    name: str
    doc: str
    num_inputs: tuple[int, int | None]  # (min, max); max None = any number
    attrs: dict[str, AttrSpec]
    infer: Callable  # (inputs: list[TensorSpec-like], **attrs) -> list[TensorSpec]
    reference: Callable  # (*torch tensors, **attrs) -> tensor or tuple of tensors
    traits: frozenset = frozenset()
    vjp: Callable | None = None  # (builder, node, output gradients) -> input gradients (passes/autodiff.py)
    # (argument expressions, **attrs) -> the op's Triton expression on float32 tiles (kcomp/ir/lowering.py),
    # for elementwise ops a generated kernel computes inline; None: no kernel computes it inline.
    lowering: Callable | None = None
    num_outputs: int | None = 1  # None: as many as the shape rule returns (variadic ops)

    def __post_init__(self):
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise TypeError(f"op name {self.name!r} must be a lower-case identifier")
        if not self.doc:
            raise TypeError(f"op {self.name}: doc is required")
        if not callable(self.infer) or not callable(self.reference):
            raise TypeError(f"op {self.name}: infer and reference must be callables")
        if self.vjp is not None and not callable(self.vjp):
            raise TypeError(f"op {self.name}: vjp must be a callable (builder, node, output gradients) or None")
        if self.lowering is not None and not callable(self.lowering):
            raise TypeError(f"op {self.name}: lowering must be a callable (argument expressions, **attrs) -> str")
        if self.num_outputs is not None and (not isinstance(self.num_outputs, int) or self.num_outputs < 1):
            raise TypeError(f"op {self.name}: num_outputs must be a positive int, or None for variadic ops")
        lo, hi = self.num_inputs
        if lo < 0 or (hi is not None and hi < lo):
            raise TypeError(f"op {self.name}: bad num_inputs {self.num_inputs}")
        for key, spec in self.attrs.items():
            if not isinstance(spec, AttrSpec):
                raise TypeError(f"op {self.name}: attr {key} must be an AttrSpec")
        if not self.traits:
            raise TypeError(f"op {self.name}: give it at least one trait (see TRAITS)")
        unknown = set(self.traits) - TRAITS
        if unknown:
            raise TypeError(f"op {self.name}: unknown traits {sorted(unknown)}")
        object.__setattr__(self, "traits", frozenset(self.traits))

    def resolve_attrs(self, given: dict) -> dict:
        """Check `given` against the schema and fill defaults."""
        unknown = set(given) - set(self.attrs)
        if unknown:
            raise ArgumentError(
                f"op {self.name}: unknown attribute(s) {sorted(unknown)}. Known: {sorted(self.attrs)}."
            )
        out = {}
        for key, spec in self.attrs.items():
            if key in given:
                out[key] = spec.check(self.name, key, given[key])
            elif spec.default is REQUIRED:
                raise ArgumentError(f"op {self.name}: attribute {key!r} is required.")
            else:
                out[key] = spec.default
        return out

    def check_arity(self, n: int) -> None:
        lo, hi = self.num_inputs
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi if hi is not None else 'any number of'}"
            raise ArgumentError(f"op {self.name}: got {n} inputs, expected {want}.")
