"""A LossScaleOptimizer's update in the one optimizer kernel (kernels/optimizer.py, the op's `skip`
and `unscale`): each gradient divided by the loss scale as it loads, and a step whose flag is 0
leaving every parameter and slot exactly as it was, without a launch per parameter.

Under the interpreter the generated kernel is compared with optimizer_update's torch reference in
float64 on fresh random inputs, output buffers poisoned with NaN (so a skipped step must copy the
old values over); the reference itself is checked against the plain update on gradients divided
by hand. One AOT compile for sm_90 (in a child process, slow) checks the guarded kernel compiles
without spills.
"""

import sys
from pathlib import Path

import pytest
import torch

from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.optim import hyper_attr
from kcomp.ir.optim import get as algorithm_record
from kcomp.ir.registry import OPS
from kcomp.optimizers.loss_scale import LOSS_SCALE
from kcomp.passes.fuse import fuse
from kcomp.runtime.kernel_cache import load_kernel

from kernel_helpers import NAN, INF, with_nonfinite
from test_kernels_optimizer import SHAPES, SMALL_BLOCKS, assert_close, initial_slots, poisoned

CASES = [("adam", {}), ("sgd", {"momentum": 0.9, "nesterov": True}), ("rmsprop", {"centered": True, "momentum": 0.3}),
         ("ftrl", {}), ("lion", {})]
IDS = [f"{a}-{h}" for a, h in CASES]


def guarded_graph(algorithm, hyper, skip=True, unscale=True):
    """One optimizer_update over SHAPES with the finite flag and the scale as inputs."""
    attrs = algorithm_record(algorithm).resolve(hyper)
    k = algorithm_record(algorithm).slot_count(attrs)
    b = GraphBuilder("guarded_update")
    params = [b.input(s, "float32", f"p{i}") for i, s in enumerate(SHAPES)]
    grads = [b.input(s, "float32", f"g{i}") for i, s in enumerate(SHAPES)]
    slots = [b.input(s, "float32", f"s{i}_{j}") for i, s in enumerate(SHAPES) for j in range(k)]
    scalars = [b.input((), "float32", name) for name in ("lr", "step", "finite", "scale")]
    guards = [x for x, on in zip(scalars[2:], (skip, unscale)) if on]
    outs = b.emit("optimizer_update", [*params, *grads, *slots, *scalars[:2], *guards], algorithm=algorithm,
                  count=len(SHAPES), hyper=hyper_attr(attrs), skip=skip, unscale=unscale)
    return b.finish(list(outs)), attrs


def reference(inputs, algorithm, attrs, **guards):
    return OPS["optimizer_update"].reference(*[t.double() for t in inputs], algorithm=algorithm, count=len(SHAPES),
                                             hyper=hyper_attr(attrs), **guards)


def state(algorithm, attrs, seed, scale=1024.0):
    """params, scaled grads (as a loss-scaled backward pass makes them), slots, lr, step."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [torch.randn(s, generator=gen) * scale for s in SHAPES]
    return params, grads, initial_slots(algorithm, attrs, SHAPES, gen), torch.tensor(0.05), torch.tensor(3.0)


@pytest.mark.parametrize("algorithm, hyper", CASES, ids=IDS)
def test_the_reference_unscales_and_keeps_a_skipped_step(algorithm, hyper):
    graph, attrs = guarded_graph(algorithm, hyper)
    params, grads, slots, lr, step = state(algorithm, attrs, seed=11)
    scale = torch.tensor(1024.0)
    plain = OPS["optimizer_update"].reference(*params, *[g / scale for g in grads], *slots, lr, step, algorithm=algorithm,
                                              count=len(SHAPES), hyper=hyper_attr(attrs))
    taken = OPS["optimizer_update"].reference(*params, *grads, *slots, lr, step, torch.tensor(1.0), scale,
                                              algorithm=algorithm, count=len(SHAPES), hyper=hyper_attr(attrs),
                                              skip=True, unscale=True)
    for got, want in zip(taken, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    grads[1].view(-1)[0] = NAN  # what a skipped step's gradients hold
    skipped = OPS["optimizer_update"].reference(*params, *grads, *slots, lr, step, torch.tensor(0.0), scale,
                                                algorithm=algorithm, count=len(SHAPES), hyper=hyper_attr(attrs),
                                                skip=True, unscale=True)
    for got, old in zip(skipped, [*params, *slots], strict=True):
        assert torch.equal(got, old)


@pytest.mark.parametrize("algorithm, hyper", CASES, ids=IDS)
@pytest.mark.parametrize("skip, unscale", [(True, True), (True, False), (False, True)], ids=["both", "skip", "unscale"])
def test_a_finite_step_equals_the_reference(algorithm, hyper, skip, unscale):
    graph, attrs = guarded_graph(algorithm, hyper, skip, unscale)
    params, grads, slots, lr, step = state(algorithm, attrs, seed=12)
    finite, scale = torch.tensor(1.0), torch.tensor(1024.0)
    guards = [x for x, on in zip((finite, scale), (skip, unscale)) if on]
    inputs = [*params, *grads, *slots, lr, step, *guards]
    n = len(SHAPES)
    (node,) = fuse(graph).nodes
    module = load_kernel(kernel_source(node, 0))
    out = poisoned(params + slots)
    module.launch(*inputs, out=out, config=SMALL_BLOCKS)
    for got, want in zip(out, reference(inputs, algorithm, attrs, skip=skip, unscale=unscale), strict=True):
        assert_close(got, want, algorithm)
    assert all(not torch.equal(got, old) for got, old in zip(out[:n], params))  # the step was taken


@pytest.mark.parametrize("algorithm, hyper", CASES, ids=IDS)
def test_a_skipped_step_keeps_every_value_bit_for_bit(algorithm, hyper):
    """Flag 0 with NaN and inf in the gradients: every new parameter and slot equals the old one
    exactly, in poisoned output buffers (the kernel copies them) and when written in place."""
    graph, attrs = guarded_graph(algorithm, hyper)
    params, grads, slots, lr, step = state(algorithm, attrs, seed=13)
    grads[0] = with_nonfinite(grads[0])
    grads[2].view(-1)[-1] = INF
    inputs = [*params, *grads, *slots, lr, step, torch.tensor(0.0), torch.tensor(1024.0)]
    (node,) = fuse(graph).nodes
    module = load_kernel(kernel_source(node, 0))
    out = poisoned(params + slots)
    module.launch(*inputs, out=out, config=SMALL_BLOCKS)
    olds = [*params, *slots]
    for got, old in zip(out, olds, strict=True):
        assert torch.equal(got, old)
    copies = [t.clone() for t in olds]
    module.launch(*inputs, out=tuple(olds), config=SMALL_BLOCKS)  # in place: the old buffers are the new
    for got, old in zip(olds, copies, strict=True):
        assert torch.equal(got, old)


def test_a_loss_scaled_training_step_guards_the_update_in_its_kernel():
    """mixed_float16's step: one optimizer kernel reads the flag and the scale; no select or division
    kernel per weight is left (`kcomp build examples/mlp_digits.k --model mlp_digits --train --policy
    mixed_float16 --explain` shows the launches)."""
    import kcomp.dsl
    from kcomp import mixed_precision
    from kcomp.compiler import train_step_graph
    from kcomp.passes import run_pipeline
    from kcomp.passes.pipeline import STEP_PIPELINE

    mixed_precision.set_global_policy("mixed_float16")
    try:
        model = kcomp.dsl.load(Path(__file__).parent.parent / "examples" / "mlp_digits.k")["mlp_digits"]
    finally:
        mixed_precision.set_global_policy("float32")
    settings = model.compile_config.settings
    model.compile(optimizer=settings["optimizer"], loss=settings["loss"], backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    (kernel,) = [n for n in fused.nodes if n.op == "kernel" and n.attrs["template"] == "optimizer"]
    (update,) = kernel.attrs["body"].nodes
    assert update.attrs["skip"] and update.attrs["unscale"]
    body_nodes = [n for k in fused.nodes if k.op == "kernel" for n in k.attrs["body"].nodes]
    assert not [n for n in body_nodes if n.op == "div" and n.inputs[1].name == LOSS_SCALE]  # each unscale is the update's
    # the iteration count's and the scale's selects (2 each) only, not 2 per weight and slot (12 weights and slots)
    assert [n.op for n in body_nodes].count("zeros_where_masked") == 4
    assert len(model.trainable_weights) == 4


# --- AOT, in a child process without TRITON_INTERPRET ----------------------------------------------

def compile_cases(cases):
    from kcomp.runtime import aot

    records = []
    for algorithm in cases:
        (node,) = fuse(guarded_graph(algorithm, dict(CASES)[algorithm])[0]).nodes
        result = aot.compile_kernel(kernel_source(node, 0), aot.example_inputs(node), target="sm_90")
        records.append({"algorithm": algorithm, "spills": result.spill_bytes, "local_stores": result.local_stores()})
    return records


@pytest.mark.slow
def test_the_guarded_kernel_compiles_for_sm_90_without_spills(tmp_path):
    from aot_helpers import run_file_as_aot_child

    records = run_file_as_aot_child(__file__, [a for a, _ in CASES], tmp_path)
    assert [r["algorithm"] for r in records] == [a for a, _ in CASES]
    for r in records:
        assert r["spills"] == 0 and r["local_stores"] == 0, r


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_cases)
