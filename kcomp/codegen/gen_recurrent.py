"""Generator for the recurrence templates (kernels/recurrent.py: the LSTM's; recurrent_gru.py,
recurrent_simple_rnn.py).

The body is one scan or scan-gradient node; there is no fused expression, only the activation
hooks (kcomp/codegen/activation_hooks.py) and a binding: which inputs are which (the optional
ones, such as the gradients a backward receives, None where absent), the node's flags, which
outputs something reads, the hooks, and whether the forward saves pre-activations.
"""

from kcomp.codegen.activation_hooks import activation_hooks
from kcomp.codegen.generated import GeneratedKernel
from kcomp.ir.ops.kernel import KernelParts
from kcomp.ir.ops.scan_activations import saves_pre

def _binding(kernel: KernelParts, fixed: tuple, optional: dict, attrs: tuple = (), outputs: bool = False) -> dict:
    """The binding's fields: each name of `fixed`, then each of `optional` whose flag is true, holds
    the position among the kernel's inputs of the anchor's next input (an absent optional one:
    None); `attrs` copies the anchor's attributes; `outputs`: per anchor output, its position
    among the kernel's outputs, or None where nothing reads it."""
    at = {v.id: i for i, v in enumerate(kernel.body.inputs)}
    given = list(kernel.anchor.inputs)
    binding = {name: repr(at[given.pop(0).id]) for name in fixed}
    binding.update({name: repr(at[given.pop(0).id] if present else None) for name, present in optional.items()})
    binding.update({name: repr(kernel.anchor.attrs[name]) for name in attrs})
    if outputs:
        kept = {v.id: i for i, v in enumerate(kernel.body.outputs)}
        binding["outputs"] = repr(tuple(kept.get(v.id) for v in kernel.anchor.outputs))
    return binding


def _given_gradients(kernel: KernelParts, names: tuple) -> dict:
    a = kernel.anchor.attrs
    flags = {"d_seq": "has_dseq", "d_h": "has_dh", "d_c": "has_dc"}
    return {name: a[flags[name]] for name in names}


def _mask(kernel: KernelParts) -> dict:
    """The mask, an optional input after the scan's own (masked=True), then the recurrent dropout
    masks (recurrent_masks=True)."""
    a = kernel.anchor.attrs
    return {"mask": a.get("masked", False), "recurrent_masks": a.get("recurrent_masks", False)}


def _with_activations(kernel: KernelParts, binding: dict) -> GeneratedKernel:
    """The scan's activation hooks (activation_hooks) and `binding` with the fields naming them and
    save_pre (whether the forward saves the gates' pre-activations)."""
    a = kernel.anchor.attrs
    hooks, fields = activation_hooks(a)
    names = [a[h] for h in ("activation", "recurrent_activation") if h in a]
    return GeneratedKernel(hooks, {**binding, **fields, "save_pre": repr(saves_pre(*names))})


def generate_lstm_scan(kernel: KernelParts) -> GeneratedKernel:
    return _with_activations(kernel, _binding(kernel, ("xw", "recurrent"), _mask(kernel), ("save",), outputs=True))


def generate_lstm_scan_grad(kernel: KernelParts) -> GeneratedKernel:
    optional = {**_mask(kernel), **_given_gradients(kernel, ("d_seq", "d_h", "d_c"))}
    return _with_activations(kernel, _binding(kernel, ("recurrent", "c_seq", "gates"), optional))


def generate_gru_scan(kernel: KernelParts) -> GeneratedKernel:
    masks = _mask(kernel)  # after the recurrent bias, where given
    optional = {"recurrent_bias": len(kernel.anchor.inputs) - sum(masks.values()) == 3, **masks}
    return _with_activations(kernel, _binding(kernel, ("xw", "recurrent"), optional, ("reset_after", "save"),
                                              outputs=True))


def generate_gru_scan_grad(kernel: KernelParts) -> GeneratedKernel:
    optional = {**_mask(kernel), **_given_gradients(kernel, ("d_seq", "d_h"))}
    return _with_activations(kernel, _binding(kernel, ("recurrent", "h_seq", "saved"), optional, ("reset_after",),
                                              outputs=True))


def generate_simple_rnn_scan(kernel: KernelParts) -> GeneratedKernel:
    return _with_activations(kernel, _binding(kernel, ("xw", "recurrent"), _mask(kernel), ("save",), outputs=True))


def generate_simple_rnn_scan_grad(kernel: KernelParts) -> GeneratedKernel:
    # the pre-activations follow h_seq where the activation's derivative needs its input
    optional = {"pre_seq": saves_pre(kernel.anchor.attrs["activation"]), **_mask(kernel),
                **_given_gradients(kernel, ("d_seq", "d_h"))}
    return _with_activations(kernel, _binding(kernel, ("recurrent", "h_seq"), optional))


GENERATES = {  # template name -> generator (kcomp.codegen.module collects these)
    "lstm_scan": generate_lstm_scan, "lstm_scan_grad": generate_lstm_scan_grad,
    "gru_scan": generate_gru_scan, "gru_scan_grad": generate_gru_scan_grad,
    "simple_rnn_scan": generate_simple_rnn_scan, "simple_rnn_scan_grad": generate_simple_rnn_scan_grad,
}
