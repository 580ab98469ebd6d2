"""Backward ops of the recurrent layers: the nodes the VJP rules in recurrent.py build.

The *_grad ops are coarse, as their forward ops are: their reference runs torch.autograd's
backward through the forward (on PyTorch's fused kernels where they match Keras's cell), on the
tape the forward op left in the same graph run (kcomp.ir.saved_forwards), else recomputing it.
"""

import torch

from kcomp.errors import ShapeError, format_shape
from kcomp.ir import saved_forwards
from kcomp.ir.opdef import OpDef, attr
from kcomp.ir.ops.recurrent import OPS as RECURRENT_OPS, bias_shape, forward as recurrent_forward, split_inputs
from kcomp.ir.types import TensorSpec


_FORWARD = {op.name: op for op in RECURRENT_OPS}
_NUM_STATES = {"lstm": 2, "gru": 1, "simple_rnn": 1}


def _split_recurrent_inputs(cell, inputs, use_bias, masked, dropout_masks, grad_outputs):
    n_fwd = 3 + int(use_bias) + 2 * int(dropout_masks) + int(masked)
    num_outputs = 1 + _NUM_STATES[cell]
    if not grad_outputs or list(grad_outputs) != sorted(set(grad_outputs)) or not all(
        0 <= i < num_outputs for i in grad_outputs
    ):
        raise ShapeError(
            f"Received: grad_outputs={grad_outputs}. Expected increasing indices of {cell}'s outputs "
            f"(0 to {num_outputs - 1}), at least one."
        )
    if len(inputs) != n_fwd + len(grad_outputs):
        raise ShapeError(
            f"{cell}_grad with use_bias={use_bias}, dropout_masks={dropout_masks}, masked={masked} and "
            f"grad_outputs={grad_outputs} takes "
            f"{n_fwd + len(grad_outputs)} inputs, received {len(inputs)}."
        )
    return inputs[:n_fwd], inputs[n_fwd:]


def _recurrent_grad_infer(cell):
    forward = _FORWARD[cell]

    def infer(inputs, grad_outputs, **attrs):
        fwd, grads = _split_recurrent_inputs(cell, inputs, attrs["use_bias"], attrs["masked"], attrs["dropout_masks"],
                                             grad_outputs)
        out_specs = forward.infer(list(fwd), **attrs)
        for i, g in zip(grad_outputs, grads):
            if g != out_specs[i]:
                raise ShapeError(
                    f"{cell}_grad: gradient of output {i} has shape {format_shape(g.shape)} ({g.dtype}); the output "
                    f"is {format_shape(out_specs[i].shape)} ({out_specs[i].dtype})."
                )
        x, kernel, recurrent = fwd[:3]
        bias = TensorSpec(bias_shape(cell, recurrent.shape[0], attrs), x.dtype)
        return [x, kernel, recurrent, bias]

    return infer


def _recurrent_grad_reference(cell):
    forward = recurrent_forward(cell)

    def reference(*inputs, grad_outputs, use_bias, masked, dropout_masks, **attrs):
        fwd, grads = _split_recurrent_inputs(cell, inputs, use_bias, masked, dropout_masks, grad_outputs)
        x, kernel, recurrent, bias, mask, dropout = split_inputs(fwd, use_bias, masked, dropout_masks)
        # Executors may run under torch.inference_mode; autograd needs ordinary tensors.
        with torch.inference_mode(False), torch.enable_grad():
            tape = saved_forwards.take_tape(cell, tuple(fwd), {"use_bias": use_bias, "masked": masked,
                                                               "dropout_masks": dropout_masks, **attrs})
            if tape is None:  # recompute it; without a bias, at a zero one (the same outputs)
                bias = bias[0] if bias else x.new_zeros(bias_shape(cell, recurrent.shape[0], attrs))
                leaves = tuple(t.detach().clone().requires_grad_(True) for t in (x, kernel, recurrent, bias))
                outputs = forward(*leaves, mask=mask, dropout=dropout, use_bias=True, **attrs)
            else:
                leaves, outputs = tape
            picked = [outputs[i] for i in grad_outputs]
            found = torch.autograd.grad(picked, leaves, [g.detach().clone() for g in grads], allow_unused=True)
        return tuple(torch.zeros_like(t) if d is None else d.detach() for t, d in zip(leaves, found))

    return reference


def _recurrent_grad_op(cell) -> OpDef:
    forward = _FORWARD[cell]
    n_grads = 1 + _NUM_STATES[cell]
    return OpDef(
        name=f"{cell}_grad",
        doc=f"Gradients of {cell} over a whole sequence: inputs are {cell}'s inputs, then the gradients of the "
        f"outputs listed in grad_outputs (indices into {cell}'s outputs, the unused ones left out); outputs "
        "d x, d kernel, d recurrent kernel and d bias (with use_bias=False, the gradient at a zero bias).",
        num_inputs=(4, 7 + n_grads),
        attrs={**forward.attrs, "grad_outputs": attr(tuple, items=int)},
        infer=_recurrent_grad_infer(cell),
        reference=_recurrent_grad_reference(cell),
        traits={"recurrent"},
        num_outputs=4,
    )


OPS = [
    _recurrent_grad_op("lstm"),
    _recurrent_grad_op("gru"),
    _recurrent_grad_op("simple_rnn"),
]
