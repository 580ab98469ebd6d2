"""A reference schedule as one generated Python function: the steps as straight-line code.

The interpreter (kcomp.ir.interpret.run_steps) looks every value up in a dict, builds each
step's arguments in a generator and checks each result's type; for a small model that loop was
a tenth of a CPU training step (about 50 us of 32 steps on this machine's cores). The same
schedule written out as code keeps the values in local variables, calls each step's function
with its arguments named, and drops a value with `del` after its last reader (the release lists
of kcomp.runtime.reference.releases), so it computes the same tensors with the same torch calls,
in the same order. `source` is the code, for a person to read:

    def run(inputs, params, F, A):
        v3, v4 = inputs
        v5 = params['dense/kernel']
        v6 = F[0](v3, v5)  # matmul
        v8 = _one(F[1](v6, **A[1]))  # softmax
        ...
"""

import torch

from kcomp.ir.graph import Graph


def _one(result):
    """A one-output step's tensor, whether its function returned the tensor or a 1-sequence."""
    if isinstance(result, torch.Tensor):
        return result
    (tensor,) = result
    return tensor


def _returns_a_tensor(fn) -> bool:
    """torch's own functions (torch.matmul, torch.add, ...) return one tensor: no _one around them."""
    return type(fn) is type(torch.add) and getattr(fn, "__module__", None) in (None, "torch")


def _name(fn, op_names: dict[int, str]) -> str:
    """The op whose torch reference `fn` is (op_names: id of each reference -> its op), else the
    function's own name (a fused step's)."""
    name = op_names.get(id(fn)) or getattr(fn, "__name__", None) or type(fn).__name__
    return " ".join(str(name).split())  # a comment stays one line, whatever a function calls itself


def _value(v) -> str:
    return f"v{v.id}"


def straight_line_source(graph: Graph, steps, release) -> str:
    """The code of `run(inputs, params, F, A)` for `steps` ((function, inputs, attrs, outputs)
    tuples; F and A hold each step's function and attrs by position)."""
    from kcomp.ir.registry import OPS

    op_names = {id(record.reference): name for name, record in OPS.items()}
    lines = ["def run(inputs, params, F, A):"]
    if graph.inputs:
        lines.append(f"    {', '.join(_value(v) for v in graph.inputs)}, = inputs")
    for p in graph.params:
        lines.append(f"    {_value(p)} = params[{p.name!r}]")
    for k, (fn, ins, attrs, outs) in enumerate(steps):
        arguments = [_value(v) for v in ins] + ([f"**A[{k}]"] if attrs else [])
        call = f"F[{k}]({', '.join(arguments)})"
        if len(outs) == 1 and _returns_a_tensor(fn):
            line = f"    {_value(outs[0])} = {call}"
        elif len(outs) == 1:
            line = f"    {_value(outs[0])} = _one({call})"
        else:
            line = f"    {', '.join(_value(v) for v in outs)}, = {call}"
        lines.append(f"{line}  # {_name(fn, op_names)}")
        if release is not None and release[k]:
            lines.append(f"    del {', '.join(f'v{vid}' for vid in release[k])}")
    lines.append(f"    return [{', '.join(_value(v) for v in graph.outputs)}]")
    return "\n".join(lines) + "\n"


class StraightLine:
    """`steps` compiled to a Python function; calling it runs them on (inputs, params)."""

    def __init__(self, graph: Graph, steps, release=None):
        self.source = straight_line_source(graph, steps, release)
        namespace = {"_one": _one}
        exec(compile(self.source, f"<kcomp schedule of {graph.name}>", "exec"), namespace)  # code we wrote above
        self._run = namespace["run"]
        self._functions = [fn for fn, *_ in steps]
        self._attrs = [attrs for _, _, attrs, _ in steps]

    def __call__(self, inputs, params) -> list[torch.Tensor]:
        return self._run(inputs, params, self._functions, self._attrs)
