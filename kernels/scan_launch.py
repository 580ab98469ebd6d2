"""Launch steps of the LSTM templates, on chip (kernels/recurrent.py) and tiled (recurrent_tiled.py):
the scan kernels' tensor arguments from the output buffers (recurrent_common.output_buffers
allocates them), and a scan gradient's operands and flags from its binding. Both kernels of a
direction take their tensors in the same order.
"""

from kcomp.kernels.recurrent_common import present


def lstm_scan_tensors(save: bool, xw, u, masks, buffers) -> tuple:
    """The lstm scan kernels' tensor arguments (XW, U, MASK, RMASKS, HSEQ, CSEQ, GATES, CLAST) from
    the step mask and the recurrent dropout masks (`masks`) and output_buffers' buffers: saving,
    every h_t, c_t and the gates (CLAST unused: the last c is c_seq's); else every h_t and the
    last c (CSEQ and GATES unused, never written). An unused one (and an absent mask:
    recurrent_common.present) is another tensor of the call: a pointer the kernel never follows."""
    if save:
        h_seq, c_seq, gates = buffers
        return xw, u, *masks, h_seq, c_seq, gates, h_seq
    h_seq, c_last = buffers
    return xw, u, *masks, h_seq, h_seq, xw, c_last


def grad_operands(binding, inputs) -> tuple:
    """(U, every c_t, the gates, the mask, the recurrent dropout masks, d_seq, d_h, d_c) of an
    lstm_scan_grad binding, contiguous; an absent mask or gradient is the gates tensor, which the
    kernel never reads in its place."""
    u, c_seq, gates = (inputs[i].contiguous() for i in (binding.recurrent, binding.c_seq, binding.gates))
    optional = (binding.mask, binding.recurrent_masks, binding.d_seq, binding.d_h, binding.d_c)
    return (u, c_seq, gates, *present(inputs, optional, gates))


def grad_flags(binding) -> dict:
    """The backward kernel's constexprs saying which gradients arrive, and whether recurrent dropout
    masks do (the step mask's MASKED: recurrent_common.launch_grid)."""
    return dict(HAS_DSEQ=binding.d_seq is not None, HAS_DH=binding.d_h is not None, HAS_DC=binding.d_c is not None,
                RECURRENT_MASKS=binding.recurrent_masks is not None)
