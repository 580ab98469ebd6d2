"""Triton kernel templates ship here (as kcomp.kernels)."""
