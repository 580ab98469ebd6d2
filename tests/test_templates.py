"""Kernel templates are records (kernels/template.py), and everything reads them.

A template's launch is a function of its module; a generated kernel module holds only the hooks
its IR needs and a binding for that launch. These tests check the registry against the code
generators, what a generated module contains, and the record's own checks.
"""

import ast
from dataclasses import dataclass, replace

import pytest
from aot_helpers import example_kernels

from kcomp.codegen.module import GENERATORS, kernel_source
from kcomp.errors import KcompError
from kcomp.ir.graph import Graph, Node
from kcomp.kernels import registry
from kcomp.kernels.registry import TEMPLATES
from kcomp.kernels.template import Binding, Template

KERNELS = list(example_kernels(training=True))


def test_every_template_has_a_generator_and_every_generator_a_template():
    assert set(GENERATORS) == set(TEMPLATES)


def test_every_example_kernel_is_a_known_template():
    assert {node.attrs["template"] for *_, node in KERNELS} <= set(TEMPLATES)


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_a_record_names_its_own_module(template):
    record = TEMPLATES[template]
    assert record.module.startswith("kcomp.kernels.") and record.binding.__module__ == record.module


@pytest.mark.parametrize("stem, model, index, node", KERNELS, ids=[f"{m}-kernel_{i}" for _, m, i, _ in KERNELS])
def test_a_generated_module_holds_hooks_and_a_binding_only(stem, model, index, node):
    """No launch logic in generated code: it defines @triton.jit hooks, names, the BINDING, and a
    one-line `launch` handing the binding to its template's launch."""
    source = kernel_source(node, index)
    tree = ast.parse(source.text)
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    launch = [f for f in functions if f.name == "launch"]
    assert len(launch) == 1 and len(launch[0].body) == 1 and isinstance(launch[0].body[0], ast.Return)
    record = TEMPLATES[node.attrs["template"]]
    call = launch[0].body[0].value
    assert isinstance(call, ast.Call) and call.func.id == f"{record.name}_launch"
    for f in functions:
        if f is not launch[0]:
            assert any(ast.unparse(d) == "triton.jit" for d in f.decorator_list), f"{f.name} is not a hook"
    assert "BINDING" in {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert "_kernel[" not in source.text  # the template launches its kernel, not the generated module


def test_an_unknown_template_is_refused_naming_the_known_ones():
    with pytest.raises(KcompError, match=r"'fft'.*matmul"):
        registry.get("fft")
    body = Graph("b", (), (), (), ())
    node = Node("kernel", (), (("body", body), ("roles", ()), ("template", "fft")), (), "x")
    with pytest.raises(KcompError, match="fft"):
        kernel_source(node, 0)


def test_a_record_refuses_what_is_not_a_binding_or_a_function():
    @dataclass(frozen=True, kw_only=True)
    class Good(Binding):
        x: int

    def launch(*args):
        return None

    Template("t", launch, Good)
    with pytest.raises(TypeError, match="subclass of Binding"):
        Template("t", launch, dict)
    with pytest.raises(TypeError, match="functions"):
        Template("t", launch, Good, in_place="always")
    with pytest.raises(TypeError, match="functions"):
        Template("t", "launch", Good)


def test_a_kernel_node_gives_each_body_node_one_role():
    from kcomp.ir.registry import OPS

    node = next(n for *_, n in KERNELS if len(n.attrs["body"].nodes) >= 2 and "epilogue" in n.attrs["roles"])
    body, roles, infer = node.attrs["body"], node.attrs["roles"], OPS["kernel"].infer
    specs = [v.spec for v in node.inputs]
    assert infer(specs, template=node.attrs["template"], body=body, roles=roles) == [v.spec for v in body.outputs]
    two_anchors = tuple("anchor" for _ in roles)
    for bad in (roles[:-1], two_anchors, roles[:-1] + ("middle",)):
        with pytest.raises(KcompError, match="roles"):
            infer(specs, template=node.attrs["template"], body=body, roles=bad)


def test_host_size_arithmetic_is_tritons():
    import triton

    from kcomp.kernels.sizes import cdiv, next_power_of_2

    for n in [*range(0, 5000), 2**31 - 1, 2**31, 2**40 + 3]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
    for a in range(0, 3000, 7):
        for b in (1, 2, 3, 16, 32, 64, 128, 1000):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)


def test_templates_are_asked_in_one_defined_order():
    registry.check_priorities(TEMPLATES.values())
    a, b = TEMPLATES["matmul"], TEMPLATES["conv2d"]
    with pytest.raises(RuntimeError, match="conv2d=10, matmul=10"):
        registry.check_priorities([a, replace(b, priority=a.priority)])


MLP_HIDDEN = "model m {\n  input(48)\n  dense(32, activation=relu)\n  dense(32, activation=relu)\n  dense(4, activation=relu)\n  dense(4)\n}\n"


def _mlp_kernels():
    import kcomp.dsl
    from kcomp.passes import run_pipeline

    fused, _ = run_pipeline(kcomp.dsl.loads(MLP_HIDDEN)["m"].to_graph())
    return [kernel_source(n, i) for i, n in enumerate(n for n in fused.nodes if n.op == "kernel")]


def test_kernels_that_differ_only_in_names_have_one_code_digest():
    """dense and dense_1 (matmul + bias_add + relu, other layer names, other widths in the docstring)
    have one code digest and autotuner key; dense_3 (no relu) has another. The digest leaves out the
    docstring, the comments and the key, and keeps where every other token stands."""
    from kcomp.codegen.module import code_digest

    first, second, third, last = _mlp_kernels()
    assert first.text != second.text and "dense_1" in second.text and "dense_1" not in first.text
    assert first.code_digest == second.code_digest == third.code_digest != last.code_digest
    assert code_digest(first.text) == first.code_digest  # the key written in is left out
    key = f'kernel_id="matmul-{first.code_digest[:12]}"'
    assert key in first.text and key in second.text
    assert "# dense: relu" in first.text
    assert code_digest(first.text.replace("# dense: relu", "# another comment")) == first.code_digest
    moved = first.text.replace("import torch\n", "import torch  \n\n", 1)  # the same tokens, one line lower
    assert code_digest(moved) != first.code_digest
    changed = first.text.replace("tl.maximum(v1, 0.0", "tl.maximum(v1, 1.0", 1)
    assert changed != first.text and code_digest(changed) != first.code_digest


def test_kernels_of_one_code_share_one_module():
    """Loaded, kernels of the same code are one module (Triton compiles its functions once), named
    by the template and the code digest."""
    from kcomp.runtime.kernel_cache import load_kernel

    first, second, _, last = _mlp_kernels()
    assert load_kernel(first) is load_kernel(second) is not load_kernel(last)
    assert load_kernel(second).__file__ == f"kcomp_generated/matmul_{second.code_digest}.py"
