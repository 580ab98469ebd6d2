"""Capture a plan's whole forward in one CUDA graph per batch shape, then replay it.

A replay launches every kernel of the forward with one call and no Python in
between, which is what makes small, launch-bound models fast. Inputs are
copied into static buffers the graph reads; outputs are cloned out of the
static buffers it writes. The executor drops captures when weights change.
"""

import torch


class CapturedForward:
    def __init__(self, plan, inputs, params):
        self.static_inputs = [t.clone() for t in inputs]
        # Warm up on a side stream first: compiles (and autotunes) every kernel
        # and computes the weight-only values, none of which may happen inside a capture.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            plan.run(self.static_inputs, params)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_outputs = plan.run(self.static_inputs, params)

    def replay(self, inputs) -> list[torch.Tensor]:
        for static, t in zip(self.static_inputs, inputs):
            static.copy_(t, non_blocking=True)
        self.graph.replay()
        return [o.clone() for o in self.static_outputs]
