"""One gradient check for every op: autodiff on the IR against torch.autograd, in float64.

check_vjp(op, inputs, attrs) builds  loss = sum(op(inputs) * cotangent)  with a
GraphBuilder, asks kcomp.passes.autodiff.gradients for d loss / d each float
input, runs the whole graph on the reference executor, and compares with
torch.autograd through the op's own reference implementation.
"""

import numpy as np
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.registry import OPS
from kcomp.passes.autodiff import gradients
from kcomp.runtime.reference import run_reference

F64 = dict(rtol=1e-7, atol=1e-9)


def check_vjp(op: str, inputs: list, attrs: dict | None = None, wrt=None, seed: int = 0, tol=F64):
    """`inputs`: numpy arrays (float64 for differentiable ones; ints stay ints)."""
    attrs = attrs or {}
    rng = np.random.default_rng(seed)
    tensors = [torch.as_tensor(np.asarray(x)) for x in inputs]
    wrt = [i for i, t in enumerate(tensors) if t.is_floating_point()] if wrt is None else list(wrt)

    # torch.autograd through the registry reference.
    leaves = [t.clone().requires_grad_(i in wrt) for i, t in enumerate(tensors)]
    out = OPS[op].reference(*leaves, **OPS[op].resolve_attrs(attrs))
    outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    cotangents = [torch.as_tensor(rng.normal(size=tuple(o.shape))) for o in outs]
    loss = sum((o * c).sum() for o, c in zip(outs, cotangents) if o.is_floating_point())
    want = torch.autograd.grad(loss, [leaves[i] for i in wrt], allow_unused=True)

    # kcomp: the same loss as an IR graph, differentiated by the VJP rules.
    b = GraphBuilder("vjp_check")
    dtype_of = {torch.float64: "float64", torch.int32: "int32", torch.int64: "int64", torch.float32: "float32"}
    values = [b.input(tuple(t.shape), dtype_of[t.dtype], f"x{i}") for i, t in enumerate(tensors)]
    results = b.emit(op, values, **attrs)
    cot_values = [b.input(tuple(c.shape), "float64", f"c{j}") for j, c in enumerate(cotangents)]
    terms = [b.emit1("sum", [b.emit1("mul", [r, c])]) for r, c in zip(results, cot_values) if r.dtype == "float64"]
    total = terms[0]
    for t in terms[1:]:
        total = b.emit1("add", [total, t])
    grads = gradients(b, total, [values[i] for i in wrt])
    missing = [i for i, g in zip(wrt, grads) if g is None]
    graph = b.finish([g for g in grads if g is not None])
    got = run_reference(graph, [*tensors, *cotangents], {})
    got_iter = iter(got)
    for i, g, w in zip(wrt, grads, want):
        if g is None:
            assert w is None or torch.count_nonzero(w) == 0, f"{op}: no gradient for input {i}, torch has one"
            continue
        got_i = next(got_iter)
        w = torch.zeros_like(tensors[i]) if w is None else w
        np.testing.assert_allclose(got_i.numpy(), w.numpy(), err_msg=f"{op}: d/d input {i}", **tol)
    return missing
