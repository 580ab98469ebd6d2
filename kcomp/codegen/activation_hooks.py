"""The recurrence templates' activation hooks, generated from the activations' own IR records.

A scan kernel (kernels/recurrent*.py) calls its activations through constexpr @triton.jit
hooks, as the matmul calls its EPILOGUE:

    activation(x)                   the op's lowering (OpDef.lowering), default attributes
    activation_grad(x, y, g)        g * activation'(x), y = activation(x): the op's VJP rule,
                                    lowered the same way

and recurrent_activation / recurrent_activation_grad likewise, from a tiny IR graph (inputs x
and g; y = act(x); dx = vjp(y, g): scan_activations.vjp_graph) whose nodes epilogue.generate
writes as expression lines, so no activation's formula has a second copy here. A rule reading
only y (tanh, sigmoid, relu, ...) gives a hook that ignores x: the scans pass it the saved output
there (scan_activations.saves_pre).
"""

from kcomp.codegen.epilogue import generate
from kcomp.ir.ops.scan_activations import vjp_graph

HOOKS = ("activation", "recurrent_activation")


def activation_source(op: str, name: str) -> str:
    """The two hooks of activation `op`, named `name` and `name`_grad."""
    graph, forward, x, y, g, dx = vjp_graph(op, name)
    hook, _ = generate(graph, [forward], None, name, "x", bound={x.id: "x"})
    grad, _ = generate(graph, list(graph.nodes[1:]), None, f"{name}_grad", "x, y, g",
                       bound={x.id: "x", y.id: "y", g.id: "g"}, result=dx)
    return f"{hook}\n\n{grad}"


def activation_hooks(attrs: dict) -> tuple[str, dict]:
    """(the hooks' source, the binding's fields naming them) for a scan node's attributes: one pair
    per activation it has (a SimpleRNN's scans: `activation` only)."""
    present = [h for h in HOOKS if h in attrs]
    source = "\n\n".join(activation_source(attrs[h], h) for h in present)
    return source, {field: field for h in present for field in (h, f"{h}_grad")}


DEFAULTS = "kernels/recurrent_activations.py"  # the templates' default hooks: Keras's default activations
DEFAULTS_HEADER = '''"""The recurrence templates' default activation hooks: Keras's, tanh (activation) and sigmoid
(recurrent_activation), as kcomp/codegen/activation_hooks.py generates them from the IR (a
generated module passes its own; these serve bindings built by hand, as some tests build them).
A test checks that this file is what the generator writes: write it again with
`python -m kcomp.codegen.activation_hooks` after changing either activation's lowering or VJP.
"""

import triton  # noqa: F401 (the hooks' decorator)
import triton.language as tl  # noqa: F401 (their expressions)


'''


def defaults_source() -> str:
    source, _ = activation_hooks({"activation": "tanh", "recurrent_activation": "sigmoid"})
    return DEFAULTS_HEADER + source


if __name__ == "__main__":
    from pathlib import Path

    (Path(__file__).resolve().parents[2] / DEFAULTS).write_text(defaults_source())
