"""Generator for the LSTM recurrence templates (kernels/recurrent.py).

The body is one lstm_scan or lstm_scan_grad; there is no fused expression, only a binding:
which inputs are which, whether the forward saves what the backward reads, which gradients
the backward receives.
"""

from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts

NO_HOOKS = "# the LSTM recurrence: no fused expression; the flags below are constexprs in the template.\n"


def _positions(kernel: KernelParts) -> dict[int, int]:
    return {v.id: i for i, v in enumerate(kernel.body.inputs)}


def generate_scan(kernel: KernelParts) -> GeneratedKernel:
    at = _positions(kernel)
    xw, recurrent = kernel.anchor.inputs
    kept = {v.id: i for i, v in enumerate(kernel.body.outputs)}  # the outputs something reads
    return GeneratedKernel(NO_HOOKS, {"xw": repr(at[xw.id]), "recurrent": repr(at[recurrent.id]),
                                      "save": repr(kernel.anchor.attrs["save"]),
                                      "outputs": repr(tuple(kept.get(v.id) for v in kernel.anchor.outputs))})


def generate_scan_grad(kernel: KernelParts) -> GeneratedKernel:
    at, a = _positions(kernel), kernel.anchor.attrs
    recurrent, c_seq, gates, *grads = kernel.anchor.inputs
    present = [name for name in ("d_seq", "d_h", "d_c") if a[{"d_seq": "has_dseq", "d_h": "has_dh", "d_c": "has_dc"}[name]]]
    given = dict(zip(present, grads, strict=True))
    binding = {"recurrent": repr(at[recurrent.id]), "c_seq": repr(at[c_seq.id]), "gates": repr(at[gates.id])}
    binding.update({name: repr(at[given[name].id] if name in given else None) for name in ("d_seq", "d_h", "d_c")})
    return GeneratedKernel(NO_HOOKS, binding)


GENERATES = {"lstm_scan": generate_scan, "lstm_scan_grad": generate_scan_grad}
