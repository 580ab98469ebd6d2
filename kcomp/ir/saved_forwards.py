"""Forward passes a later backward op of the same graph run reuses instead of recomputing.

The recurrent ops' backward ops (lstm_grad, ...) are coarse: their reference needs the
forward's values at every time step, and recomputes the whole forward with torch.autograd
to get them. When the interpreter runs a graph that holds such a backward op, it opens a
store for that run (`for_run`); the forward op then runs with autograd recording, hands the
interpreter detached outputs, and leaves its tape here; the backward op takes the tape and
runs autograd's backward on it, as a hand-written PyTorch loop does. The forward's work is
not done twice, and the result is the same as recomputing (the same function of the same
tensors). A tape is keyed by the op, its attributes and its input tensors (held by the
entry, so their ids stay theirs, with their version counters, so a changed tensor misses);
the store and every tape in it go when the run ends.
"""

from contextlib import contextmanager
from contextvars import ContextVar

import torch

_store: ContextVar[dict | None] = ContextVar("kcomp_saved_forwards", default=None)


@contextmanager
def for_run(forward_ops: set[str]):
    """Within: the forward ops named in `forward_ops` leave their tapes for this run's backward ops.
    Nested runs (a kernel node's body) share the outer run's store."""
    if _store.get() is not None or not forward_ops:
        yield
        return
    token = _store.set({"wanted": frozenset(forward_ops), "tapes": {}})
    try:
        yield
    finally:
        _store.reset(token)


def forwards_with_backward(nodes) -> set[str]:
    """The ops whose backward op (<op>_grad) is among `nodes`: those whose tapes a run may keep."""
    return {node.op.removesuffix("_grad") for node in nodes if node.op.endswith("_grad")}


def _key(op: str, inputs, attrs: dict) -> tuple:
    return (op, tuple((id(t), t._version) for t in inputs), tuple(sorted(attrs.items())))


def wants_tape(op: str) -> bool:
    """Whether a backward op of this run will take the tape of `op`'s forward, and autograd can record."""
    store = _store.get()
    return (store is not None and op in store["wanted"] and torch.is_grad_enabled()
            and not torch.is_inference_mode_enabled())


def keeps(op: str) -> bool:
    """Whether a backward op of this run will take what `op`'s forward saves without autograd
    (max_pool2d's argmax indices): no tape to record, so grad mode does not matter."""
    store = _store.get()
    return store is not None and op in store["wanted"]


def save_tape(op: str, inputs: tuple, attrs: dict, leaves: tuple, outputs: tuple) -> None:
    """Keep the forward of `op` on `inputs` (its leaves and outputs, recorded by autograd) for the run's backward."""
    _store.get()["tapes"][_key(op, inputs, attrs)] = (inputs, leaves, outputs)


def take_tape(op: str, inputs: tuple, attrs: dict):
    """(leaves, outputs) of the forward of `op` on exactly these inputs in this run, or None."""
    store = _store.get()
    if store is None:
        return None
    entry = store["tapes"].pop(_key(op, inputs, attrs), None)
    return None if entry is None else entry[1:]
