"""Ops that exist for gradients (built by VJP rules): masks, broadcasts, slices, counts."""

OPS = []
