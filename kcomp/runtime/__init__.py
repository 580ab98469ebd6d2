"""Executors that run a graph: today the reference executor (torch ops, CPU)."""

from kcomp.runtime.reference import run_reference

__all__ = ["run_reference"]
