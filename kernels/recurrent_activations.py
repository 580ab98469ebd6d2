"""The recurrence templates' default activation hooks: Keras's, tanh (activation) and sigmoid
(recurrent_activation), as kcomp/codegen/activation_hooks.py generates them from the IR (a
generated module passes its own; these serve bindings built by hand, as some tests build them).
A test checks that this file is what the generator writes: write it again with
`python -m kcomp.codegen.activation_hooks` after changing either activation's lowering or VJP.
"""

import triton  # noqa: F401 (the hooks' decorator)
import triton.language as tl  # noqa: F401 (their expressions)


@triton.jit
def activation(x):
    v0 = (2.0 * tl.sigmoid(2.0 * x) - 1.0)  # activation: tanh
    return v0


@triton.jit
def activation_grad(x, y, g):
    v0 = (y * y)  # activation: mul
    v1 = (1.0 - v0)  # activation: sub
    v2 = (g * v1)  # activation: mul
    return v2


@triton.jit
def recurrent_activation(x):
    v0 = tl.sigmoid(x)  # recurrent_activation: sigmoid
    return v0


@triton.jit
def recurrent_activation_grad(x, y, g):
    v0 = (1.0 - y)  # recurrent_activation: sub
    v1 = (y * v0)  # recurrent_activation: mul
    v2 = (g * v1)  # recurrent_activation: mul
    return v2
