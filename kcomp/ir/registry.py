"""The op registry: every op's record, collected from the op modules in one list.

Modules are listed here explicitly (no registration by import side effect), so
this file is the index of every op kcomp knows.
"""

from kcomp.errors import ArgumentError
from kcomp.ir.opdef import OpDef
from kcomp.ir.ops import (
    activations, augment, collective, conv, conv_grad, elementwise, gather, grad_support, image, kernel, linalg, loss_math,
    loss_ops, metric_ops, norm, optim, recurrent, recurrent_grad, recurrent_scan, recurrent_scan_gru, recurrent_scan_simple_rnn, reduce, shape,
)

_MODULES = (
    elementwise, activations, linalg, reduce, shape, conv, norm, gather, recurrent, kernel, grad_support, conv_grad,
    recurrent_grad, recurrent_scan, recurrent_scan_gru, recurrent_scan_simple_rnn, loss_math, optim, metric_ops, loss_ops,
    augment, image, collective,
)


def _collect() -> dict[str, OpDef]:
    ops: dict[str, OpDef] = {}
    for module in _MODULES:
        for op in module.OPS:
            if op.name in ops:
                raise TypeError(f"op {op.name!r} is defined twice (second time in {module.__name__})")
            ops[op.name] = op
    return ops


OPS: dict[str, OpDef] = _collect()


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        from difflib import get_close_matches

        near = get_close_matches(name, OPS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ArgumentError(f"Received: op={name!r}, which is not a kcomp op.{hint}") from None
