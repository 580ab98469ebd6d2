"""Generator for the tiled GRU recurrence templates (kernels/recurrent_tiled_gru.py).

Their bindings have the on-chip templates' fields, so gen_recurrent's generators serve them
unchanged: which template runs a scan is the fusion pass's choice, by hidden size.
"""

from kcomp.codegen.gen_recurrent import generate_gru_scan, generate_gru_scan_grad

GENERATES = {"gru_scan_tiled": generate_gru_scan, "gru_scan_grad_tiled": generate_gru_scan_grad}
