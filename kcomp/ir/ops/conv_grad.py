"""Backward ops of convolution, pooling and embedding (built by their VJP rules)."""

OPS = []
