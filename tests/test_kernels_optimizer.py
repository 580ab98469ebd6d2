"""The optimizer template: every parameter of a step updated in ONE launch (kernels/optimizer.py).

Under the interpreter the generated kernel runs three consecutive steps on
parameters of ragged sizes, with fresh random gradients each step and output
buffers poisoned with NaN, and is compared with optimizer_update's torch
reference run in float64 on the same inputs. One AOT compile for sm_90 (in a
child process) checks that the GPU kernel compiles without spills.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

import kcomp.kernels.optimizer as template
from kcomp.codegen.module import kernel_source
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.ops.optim import hyper_attr
from kcomp.ir.optim import get as algorithm_record
from kcomp.ir.registry import OPS
from kcomp.passes.fuse import fuse
from kcomp.runtime.kernel_cache import load_kernel

from kernel_helpers import INF, NAN, KernelSpy, assert_same_nonfinite, with_nonfinite
from tolerances import tolerance

SHAPES = [(7, 5), (5,), (3, 3, 2, 4), (1,)]
CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adam", {"amsgrad": True, "beta_1": 0.8}), ("adamw", {"weight_decay": 0.1, "epsilon": 0.01}),
    ("adamw", {"weight_decay": 0.004, "amsgrad": True}),
    ("rmsprop", {}), ("rmsprop", {"momentum": 0.5, "epsilon": 0.01}), ("rmsprop", {"centered": True}),
    ("rmsprop", {"centered": True, "momentum": 0.3}),
    ("adagrad", {}), ("adagrad", {"epsilon": 0.01}),
    ("adadelta", {}), ("adadelta", {"rho": 0.5, "epsilon": 0.01}),
    ("adamax", {}), ("adamax", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 0.01}),
    ("nadam", {}), ("nadam", {"beta_1": 0.8, "beta_2": 0.9, "epsilon": 0.01}),
    ("ftrl", {}), ("ftrl", {"learning_rate_power": 0.0}),
    ("ftrl", {"learning_rate_power": -0.7, "l1_regularization_strength": 0.3, "l2_regularization_strength": 0.1,
              "l2_shrinkage_regularization_strength": 0.05, "beta": 0.2}),
    ("lion", {}), ("lion", {"beta_1": 0.5, "beta_2": 0.9}),
]  # a large epsilon shows where it is added (Adam: to sqrt(v); RMSprop, Adagrad: under the root)
SMALL_BLOCKS = dict(BLOCK=16, num_warps=1)  # several blocks per parameter, ragged tails


def update_graph(algorithm, hyper, shapes=SHAPES, outputs=None, shared_grad=False):
    """A graph of one optimizer_update over `shapes` (float32); `outputs` picks which results it returns."""
    attrs = algorithm_record(algorithm).resolve(hyper)  # every hyper-parameter, Keras's defaults filled in
    k = algorithm_record(algorithm).slot_count(attrs)
    b = GraphBuilder("update")
    params = [b.input(s, "float32", f"p{i}") for i, s in enumerate(shapes)]
    grads = [b.input(s, "float32", f"g{i}") for i, s in enumerate(shapes)]
    if shared_grad:  # one gradient value for every parameter (CSE can make two gradients one)
        grads = [grads[0]] * len(shapes)
    slots = [b.input(s, "float32", f"s{i}_{j}") for i, s in enumerate(shapes) for j in range(k)]
    lr, step = b.input((), "float32", "lr"), b.input((), "float32", "step")
    outs = b.emit("optimizer_update", [*params, *grads, *slots, lr, step], algorithm=algorithm, count=len(shapes),
                  hyper=hyper_attr(attrs))
    return b.finish([outs[i] for i in outputs] if outputs is not None else list(outs)), attrs, k


def kernel_module(graph):
    (node,) = fuse(graph).nodes
    assert node.op == "kernel" and node.attrs["template"] == "optimizer"
    return node, load_kernel(kernel_source(node, 0))


def initial_slots(algorithm, attrs, shapes, gen):
    """A state the optimizer could be in: second moments and accumulators positive, and v > average**2
    (centered RMSprop)."""
    k = algorithm_record(algorithm).slot_count(attrs)
    slots = []
    for s in shapes:
        own = [torch.randn(s, generator=gen) * 0.3 for _ in range(k)]
        if algorithm in ("adam", "adamw"):
            own[1:] = [torch.rand(s, generator=gen) * 0.5 + 0.01 for _ in own[1:]]
        elif algorithm == "rmsprop":
            average = own[-1] if attrs["centered"] else torch.zeros(s)
            own[0] = average * average + torch.rand(s, generator=gen) + 0.05
        elif algorithm in ("adagrad", "ftrl"):  # the accumulator of squares: positive
            own[0] = torch.rand(s, generator=gen) + 0.1
        elif algorithm == "adadelta":  # both are accumulators of squares
            own = [torch.rand(s, generator=gen) + 0.1 for _ in own]
        elif algorithm == "adamax":  # the infinity norm
            own[1] = torch.rand(s, generator=gen) + 0.1
        elif algorithm == "nadam":  # v positive; the momentum schedule's product, one value per parameter
            own[1], own[2] = torch.rand(s, generator=gen) * 0.5 + 0.01, torch.full(s, 0.3)
        slots += own
    return slots


def reference(inputs, algorithm, attrs, count):
    """optimizer_update's torch reference in float64 on the same (float32) inputs."""
    return OPS["optimizer_update"].reference(*[t.double() for t in inputs], algorithm=algorithm, count=count,
                                             hyper=hyper_attr(attrs))


def poisoned(tensors):
    return tuple(torch.full_like(t, float("nan")) for t in tensors)


def update_tolerance(algorithm=None):
    """One step's float32 rounding against the float64 reference; FTRL's new parameter is -z /
    quadratic where z sums terms up to 1/lr times larger than it (the difference of powers of the
    accumulator divided by lr): float32 keeps about 1e-7 of those terms."""
    return tolerance("float32", "cancelling" if algorithm == "ftrl" else "update")


def assert_close(got, want, algorithm=None):
    assert not torch.isnan(got).any()
    torch.testing.assert_close(got.double(), want, **update_tolerance(algorithm))


@pytest.mark.parametrize("config", [None, SMALL_BLOCKS], ids=["default-blocks", "16-element-blocks"])
@pytest.mark.parametrize("algorithm, hyper", CASES, ids=[f"{a}-{h}" for a, h in CASES])
def test_three_steps_equal_the_reference(algorithm, hyper, config):
    graph, attrs, k = update_graph(algorithm, hyper)
    _, module = kernel_module(graph)
    gen = torch.Generator().manual_seed(7)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    slots = initial_slots(algorithm, attrs, SHAPES, gen)
    lr = torch.tensor(0.05)
    for t in (1.0, 2.0, 3.0):
        grads = [torch.randn(s, generator=gen) for s in SHAPES]
        inputs = [*params, *grads, *slots, lr, torch.tensor(t)]
        out = poisoned([*params, *slots])
        module.launch(*inputs, out=out if len(out) > 1 else out[0], config=config)
        for got, want in zip(out, reference(inputs, algorithm, attrs, len(SHAPES))):
            assert_close(got, want, algorithm)
        n = len(SHAPES)
        params, slots = list(out[:n]), list(out[n:])  # the next step starts from this one's results


@pytest.mark.parametrize("algorithm, hyper", CASES, ids=[f"{a}-{h}" for a, h in CASES])
def test_nan_and_inf_pass_on_as_in_the_reference(algorithm, hyper):
    """Gradients with NaN, +inf and -inf, and a parameter already NaN: every new parameter and slot
    is NaN or inf exactly where the reference's is (AMSGrad's running maximum of v had dropped
    a NaN: tl.maximum's default)."""
    graph, attrs, k = update_graph(algorithm, hyper)
    _, module = kernel_module(graph)
    gen = torch.Generator().manual_seed(8)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    params[2].view(-1)[5] = NAN
    grads = [with_nonfinite(torch.randn(s, generator=gen)) for s in SHAPES[:1]] + \
            [torch.randn(s, generator=gen) for s in SHAPES[1:]]
    grads[2].view(-1)[-1] = INF  # a ragged last block
    slots = initial_slots(algorithm, attrs, SHAPES, gen)
    inputs = [*params, *grads, *slots, torch.tensor(0.05), torch.tensor(2.0)]
    out = poisoned([*params, *slots])
    module.launch(*inputs, out=out if len(out) > 1 else out[0], config=SMALL_BLOCKS)
    for got, want in zip(out, reference(inputs, algorithm, attrs, len(SHAPES)), strict=True):
        assert_same_nonfinite(got, want, **update_tolerance(algorithm))


@pytest.mark.parametrize("beta_1, beta_2, first_step", [(0.9, 0.999, 1.0), (0.9, 0.999, 40.0), (0.0, 0.5, 1.0)])
def test_adam_bias_correction_in_early_and_late_steps(beta_1, beta_2, first_step):
    # 1 - beta**step: a series for small step * log(beta) (beta_2 = 0.999 early), exp otherwise; beta 0 is log -inf.
    graph, attrs, k = update_graph("adam", {"beta_1": beta_1, "beta_2": beta_2})
    _, module = kernel_module(graph)
    gen = torch.Generator().manual_seed(8)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    slots = initial_slots("adam", attrs, SHAPES, gen)
    for t in (first_step, first_step + 1):
        inputs = [*params, *[torch.randn(s, generator=gen) for s in SHAPES], *slots, torch.tensor(0.01), torch.tensor(t)]
        out = module.launch(*inputs)  # no buffers given: the template's launch allocates them
        for got, want in zip(out, reference(inputs, "adam", attrs, len(SHAPES))):
            assert_close(got, want)
        params, slots = list(out[: len(SHAPES)]), list(out[len(SHAPES) :])


@pytest.mark.parametrize("config", [None, SMALL_BLOCKS], ids=["default-blocks", "16-element-blocks"])
def test_one_launch_updates_every_parameter(monkeypatch, config):
    graph, attrs, k = update_graph("adam", {"amsgrad": True})
    _, module = kernel_module(graph)
    counter = KernelSpy(template.optimizer_kernel)
    monkeypatch.setattr(template, "optimizer_kernel", counter)  # the template's launch runs it
    inputs = [torch.randn(s) for s in SHAPES] * 2 + initial_slots("adam", attrs, SHAPES, torch.Generator()) + [torch.tensor(0.1), torch.tensor(1.0)]
    module.launch(*inputs, config=config)
    block = (config or template.INTERPRETER_CONFIG)["BLOCK"]
    assert counter.grids == [(sum(triton.cdiv(torch.Size(s).numel(), block) for s in SHAPES),)]


def test_address_tables_are_built_once_per_set_of_buffers(monkeypatch):
    graph, attrs, k = update_graph("sgd", {"momentum": 0.9})
    _, module = kernel_module(graph)
    builds = []
    build = template._host_tables
    monkeypatch.setattr(template, "_host_tables", lambda *a: builds.append(a) or build(*a))
    inputs = [torch.randn(s) for s in SHAPES] * 3 + [torch.tensor(0.1), torch.tensor(1.0)]
    out = poisoned([*inputs[:4], *inputs[8:12]])
    module.launch(*inputs, out=out)
    module.launch(*inputs, out=out)  # the same buffers: the same tables
    assert len(builds) == 1
    module.launch(*inputs, out=poisoned(out))  # new output buffers: new addresses
    assert len(builds) == 2


def test_a_capture_fills_tables_allocated_before_it_when_it_ends():
    """Tables for buffers a capture allocates go into memory allocated before the capture (a spare
    the warm-up run left), filled once the capture ends. Memory allocated during a real capture comes
    from the graph's pool, where earlier kernels of the graph write at every replay: on an H200 such
    tables were overwritten and every captured training step faulted."""
    from collections import OrderedDict

    from kcomp import capture
    from kcomp.errors import KcompError

    params, grads = [torch.randn(s) for s in SHAPES], [torch.randn(s) for s in SHAPES]
    kept, spares = OrderedDict(), {}
    with pytest.raises(KcompError, match="before it ran once outside one"), capture.recording(capture.Recording()):
        template.address_table(params, grads, [], [torch.empty_like(p) for p in params], 16, kept, spares)
    template.address_table(params, grads, [], [torch.empty_like(p) for p in params], 16, kept, spares)  # the warm-up
    (spare,) = spares.values()
    news = [torch.empty_like(p) for p in params]  # what the capture allocates
    recording = capture.Recording()
    with capture.recording(recording):
        table, owners = template.address_table(params, grads, [], news, 16, kept, spares)
        assert table is spare[0] and owners is spare[1]
    assert recording.finish() == [(table, owners)]  # the graph keeps them; the fill happens now
    want_table, want_owners = template._host_tables(template._rows(params, grads, [], news), 16)
    assert torch.equal(table, want_table) and torch.equal(owners, want_owners)
    assert spares == {}  # used up: the next capture needs the next warm-up's spare


@pytest.mark.parametrize("outputs", [[0, 2, 5], [1]], ids=["some-outputs", "one-output"])
def test_outputs_nothing_reads_and_a_shared_gradient(outputs):
    # Fusion keeps only the outputs the graph reads; the kernel writes the others to scratch.
    shapes = [(6,), (6,), (6,)]
    graph, attrs, k = update_graph("rmsprop", {"momentum": 0.5}, shapes=shapes, outputs=outputs, shared_grad=True)
    node, module = kernel_module(graph)
    assert len(node.outputs) == len(outputs) and len(node.inputs) == 3 + 1 + 3 * k + 2
    gen = torch.Generator().manual_seed(9)
    params, grad = [torch.randn(s, generator=gen) for s in shapes], torch.randn(6, generator=gen)
    slots = initial_slots("rmsprop", attrs, shapes, gen)
    lr, step = torch.tensor(0.05), torch.tensor(1.0)
    got = module.launch(*params, grad, *slots, lr, step)
    got = got if isinstance(got, tuple) else (got,)
    want = reference([*params, grad, grad, grad, *slots, lr, step], "rmsprop", attrs, len(shapes))
    for g, i in zip(got, outputs, strict=True):
        assert_close(g, want[i])


def test_a_training_step_updates_the_model_with_one_optimizer_kernel():
    # `kcomp build examples/mlp_digits.k --model mlp_digits --train --explain` shows the same.
    import kcomp.dsl
    from kcomp.compiler import train_step_graph
    from kcomp.passes import run_pipeline
    from kcomp.passes.pipeline import STEP_PIPELINE

    model = kcomp.dsl.load(Path(__file__).parent.parent / "examples" / "mlp_digits.k")["mlp_digits"]
    settings = model.compile_config.settings  # its compile section: adam
    model.compile(optimizer=settings["optimizer"], loss=settings["loss"], backend="reference")
    fused, _ = run_pipeline(train_step_graph(model), passes=STEP_PIPELINE)
    assert not [n for n in fused.nodes if n.op == "optimizer_update"]
    (kernel,) = [n for n in fused.nodes if n.op == "kernel" and n.attrs["template"] == "optimizer"]
    (update,) = kernel.attrs["body"].nodes
    assert update.op == "optimizer_update" and len(kernel.outputs) == len(update.outputs) == 3 * len(model.trainable_weights)


# --- AOT, in a child process without TRITON_INTERPRET ----------------------------------------------

AOT_CASES = [("adamw", {"amsgrad": True, "weight_decay": 0.01}), ("rmsprop", {"centered": True, "momentum": 0.3}),
             ("sgd", {"momentum": 0.9, "nesterov": True}), ("adagrad", {}), ("adadelta", {}), ("adamax", {}),
             ("nadam", {}), ("ftrl", {"learning_rate_power": -0.7, "l1_regularization_strength": 0.1}), ("lion", {})]


def aot_child() -> None:
    """Compile the AOT cases for sm_90 and print one JSON record per case."""
    from kcomp.runtime import aot

    records = []
    for algorithm, hyper in AOT_CASES:
        (node,) = fuse(update_graph(algorithm, hyper)[0]).nodes
        result = aot.compile_kernel(kernel_source(node, 0), aot.example_inputs(node), target="sm_90")  # exactly one launch
        records.append({"algorithm": algorithm, "ptx_target": next(l.split()[-1] for l in result.ptx.splitlines() if l.startswith(".target")),
                        "spills": result.spill_bytes, "local_stores": result.local_stores(), "registers": result.registers})
    print(json.dumps(records))


@pytest.mark.slow
def test_compiles_for_sm_90_without_spills():
    from aot_helpers import compiler_env

    here = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(here)!r}); import test_kernels_optimizer as t; t.aot_child()"
    done = subprocess.run([sys.executable, "-c", code], env=compiler_env(), cwd=here.parent, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    records = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["algorithm"] for r in records] == [a for a, _ in AOT_CASES]
    for r in records:
        assert r["ptx_target"] == "sm_90a" and r["spills"] == 0 and r["local_stores"] == 0, r
