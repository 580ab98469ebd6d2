"""Generator for the tiled SimpleRNN recurrence templates (kernels/recurrent_tiled_simple_rnn.py).

Their bindings have the on-chip templates' fields, so gen_recurrent's generators serve them
unchanged (as gen_recurrent_tiled's do the tiled LSTM's): the hidden size alone picks the template.
"""

from kcomp.codegen.gen_recurrent import generate_simple_rnn_scan, generate_simple_rnn_scan_grad

GENERATES = {"simple_rnn_scan_tiled": generate_simple_rnn_scan, "simple_rnn_scan_grad_tiled": generate_simple_rnn_scan_grad}
