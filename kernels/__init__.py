"""Triton kernel templates ship here (as kcomp.kernels).

Importing the package imports no Triton: the fusion pass reads the templates' records through
kcomp.kernels.registry only when it runs, so a process that never fuses (the reference backend)
can still choose Triton's interpreter later (TRITON_INTERPRET must be set before triton is
imported). The template modules import Triton themselves.
"""
