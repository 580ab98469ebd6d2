"""A reference schedule as one generated Python function: the steps as straight-line code.

The interpreter (kcomp.ir.interpret.run_steps) looks every value up in a dict, builds each
step's arguments in a generator and checks each result's type; for a small model that loop was
a tenth of a CPU training step (about 50 us of 32 steps on this machine's cores). The same
schedule written out as code keeps the values in local variables, calls each step's function
with its arguments named, and drops a value with `del` after its last reader (the release lists
of kcomp.runtime.reference.releases), so it computes the same tensors with the same torch calls,
in the same order. `source` is the code, for a person to read:

    def run(inputs, params, F, A, K):
        v3, v4 = inputs
        v5 = params['dense/kernel']
        v6 = F[0](v3, v5)  # matmul
        v8 = _one(F[1](v6, **A[1]))  # softmax
        v9 = K[0]  # constant, made once
        ...

Steps that make the same tensor on every run (a constant, a reshape of one: the 1 that counts an
optimizer's iterations, the 0 a ReLU's gradient compares with, the mean's 1.0 before its division by
the batch size) are run once when the code is made, and the code reads their tensors from K. None of
them is a graph output, so no caller receives one, and no step writes over them: the in-place steps
(kcomp.runtime.reference_fusions) write only over values that a FRESH_OPS step made, and the
optimizer update only over parameters.
"""

import torch

from kcomp.ir.graph import Graph
from kcomp.runtime.reference_fusions import FRESH_STEPS, IN_PLACE

WRITTEN_OVER = {over: position for _, over, position in IN_PLACE}  # in-place step function -> the input it returns


def _one(result):
    """A one-output step's tensor, whether its function returned the tensor or a 1-sequence."""
    if isinstance(result, torch.Tensor):
        return result
    (tensor,) = result
    return tensor


def _returns_a_tensor(fn) -> bool:
    """torch's own functions (torch.matmul, torch.add, ...) return one tensor, as do the in-place
    steps (which return the input they wrote over): no _one around them."""
    if fn in WRITTEN_OVER:
        return True
    return type(fn) is type(torch.add) and getattr(fn, "__module__", None) in (None, "torch")


def _name(fn, op_names: dict[int, str]) -> str:
    """The op whose torch reference `fn` is (op_names: id of each reference -> its op), else the
    function's own name (a fused step's)."""
    name = op_names.get(id(fn)) or getattr(fn, "__name__", None) or type(fn).__name__
    return " ".join(str(name).split())  # a comment stays one line, whatever a function calls itself


def _value(v) -> str:
    return f"v{v.id}"


# Ops that make the same tensor on every run from their attrs and inputs of the same kind.
FOLDABLE_OPS = ("constant", "reshape")


def fold_constants(graph: Graph, steps) -> dict[int, tuple[int, torch.Tensor]]:
    """Step position -> (its output's value id, its tensor) for each step that can run once, now:
    a FOLDABLE_OPS step of one output, not a graph output, whose inputs are all folded values."""
    from kcomp.ir.registry import OPS

    foldable = {id(OPS[name].reference) for name in FOLDABLE_OPS}
    outputs = {v.id for v in graph.outputs}
    folded: dict[int, torch.Tensor] = {}  # value id -> tensor
    at: dict[int, tuple[int, torch.Tensor]] = {}
    for k, (fn, ins, attrs, outs) in enumerate(steps):
        if id(fn) not in foldable or len(outs) != 1 or outs[0].id in outputs or any(v.id not in folded for v in ins):
            continue
        folded[outs[0].id] = _one(fn(*(folded[v.id] for v in ins), **attrs))
        at[k] = (outs[0].id, folded[outs[0].id])
    # A step outside FRESH_STEPS may return its input itself or a view of it (a cast to the same dtype, a
    # reshape; an in-place step, the input it writes over): a folded tensor must not reach the caller
    # as an output that way, so a folded value from which such a chain of steps leads to an output is
    # made on every run instead.
    shares = {vid: {vid} for vid in folded}  # value id -> the folded values whose tensor it may be
    for fn, ins, _, outs in steps:
        if fn in FRESH_STEPS:
            continue
        passed = (ins[WRITTEN_OVER[fn]],) if fn in WRITTEN_OVER else ins
        sources = set().union(*(shares.get(v.id, set()) for v in passed))
        for v in outs:
            shares[v.id] = shares.get(v.id, set()) | sources
    leaking = set().union(*(shares.get(vid, set()) for vid in outputs))
    return {k: entry for k, entry in at.items() if entry[0] not in leaking}


def straight_line_source(graph: Graph, steps, release, folded=None) -> str:
    """The code of `run(inputs, params, F, A, K)` for `steps` ((function, inputs, attrs, outputs)
    tuples; F and A hold each step's function and attrs by position; K the tensors of the steps
    `folded` ran once, in step order)."""
    from kcomp.ir.registry import OPS

    op_names = {id(record.reference): name for name, record in OPS.items()}
    folded = folded or {}
    lines = ["def run(inputs, params, F, A, K):"]
    if graph.inputs:
        lines.append(f"    {', '.join(_value(v) for v in graph.inputs)}, = inputs")
    for p in graph.params:
        lines.append(f"    {_value(p)} = params[{p.name!r}]")
    constants = {k: i for i, k in enumerate(folded)}
    for k, (fn, ins, attrs, outs) in enumerate(steps):
        arguments = [_value(v) for v in ins] + ([f"**A[{k}]"] if attrs else [])
        call = f"F[{k}]({', '.join(arguments)})"
        if k in constants:
            line = f"    {_value(outs[0])} = K[{constants[k]}]"
        elif len(outs) == 1 and _returns_a_tensor(fn):
            line = f"    {_value(outs[0])} = {call}"
        elif len(outs) == 1:
            line = f"    {_value(outs[0])} = _one({call})"
        else:
            line = f"    {', '.join(_value(v) for v in outs)}, = {call}"
        lines.append(f"{line}  # {_name(fn, op_names)}{', made once' if k in constants else ''}")
        if release is not None and release[k]:
            lines.append(f"    del {', '.join(f'v{vid}' for vid in release[k])}")
    lines.append(f"    return [{', '.join(_value(v) for v in graph.outputs)}]")
    return "\n".join(lines) + "\n"


class StraightLine:
    """`steps` compiled to a Python function; calling it runs them on (inputs, params)."""

    def __init__(self, graph: Graph, steps, release=None):
        folded = fold_constants(graph, steps)
        self.source = straight_line_source(graph, steps, release, folded)
        namespace = {"_one": _one}
        exec(compile(self.source, f"<kcomp schedule of {graph.name}>", "exec"), namespace)  # code we wrote above
        self._run = namespace["run"]
        self._functions = [fn for fn, *_ in steps]
        self._attrs = [attrs for _, _, attrs, _ in steps]
        self._constants = [tensor for _, tensor in folded.values()]

    def __call__(self, inputs, params) -> list[torch.Tensor]:
        return self._run(inputs, params, self._functions, self._attrs, self._constants)
