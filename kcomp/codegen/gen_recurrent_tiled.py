"""Generator for the tiled LSTM recurrence templates (kernels/recurrent_tiled.py).

Their bindings have the on-chip templates' fields (which inputs are which, whether the forward
saves, which gradients arrive), so gen_recurrent's generators serve them unchanged: which
template runs a scan is the fusion pass's choice, by hidden size, and nothing else differs.
"""

from kcomp.codegen.gen_recurrent import generate_lstm_scan, generate_lstm_scan_grad

GENERATES = {"lstm_scan_tiled": generate_lstm_scan, "lstm_scan_grad_tiled": generate_lstm_scan_grad}
