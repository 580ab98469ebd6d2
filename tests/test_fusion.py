"""Fusion and simplification: golden IR before and after for each pattern, the
fallbacks, and every example model run on its generated kernels (interpreter)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kcomp import dsl
from kcomp.ir import GraphBuilder, print_graph
from kcomp.layers import (
    Activation, Add, BatchNormalization, Conv1D, Conv2D, Dense, Dropout, Flatten, GlobalAveragePooling1D,
    GlobalAveragePooling2D, Input, LayerNormalization, MaxPooling1D, MaxPooling2D, Permute, Reshape, Softmax,
    TimeDistributed,
)
from kcomp.models import Model, Sequential
from kcomp.passes import run_pipeline
from kcomp.passes.simplify import simplify

from kernel_helpers import assert_compiled_matches_reference, kernels_of, randomize

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.k"))


def dense_relu():
    return Sequential([Input(shape=(23,)), Dense(19, activation="relu")])


def dense_batchnorm_residual():
    x = Input(shape=(16,))
    h = BatchNormalization()(Dense(16, activation="gelu")(x))
    return Model(x, Activation("tanh")(Add()([h, x])))


def conv_relu_maxpool():
    return Sequential([Input(shape=(9, 11, 3)), Conv2D(5, 3, padding="same", activation="relu"), MaxPooling2D()])


def conv1d_relu_maxpool():
    """conv_relu_maxpool's 1-D twin: the sequence and the kernel viewed as one-row images (reshapes)."""
    return Sequential([Input(shape=(13, 3)), Conv1D(5, 3, padding="same", activation="relu"), MaxPooling1D()])


def causal_conv1d_stack():
    """A causal Conv1D (a pad before its conv kernel), a pooled Conv1D and a global average pool."""
    return Sequential([
        Input(shape=(13, 3)), Conv1D(4, 3, padding="causal", dilation_rate=2, activation="tanh"),
        Conv1D(5, 2, activation="relu"), MaxPooling1D(3), GlobalAveragePooling1D(),
    ])


def time_distributed_conv_pool_dense():
    """Per-frame Conv2D + pool and a per-step Dense: the steps folded into the batch ("N*3"); the
    fold and unfold reshapes between the wrappers cancel, so the conv takes the pool as Conv2D does."""
    return Sequential([
        Input(shape=(3, 7, 6, 2)), TimeDistributed(Conv2D(4, 3, padding="same", activation="relu")),
        TimeDistributed(MaxPooling2D()), TimeDistributed(Flatten()), TimeDistributed(Dense(5, activation="tanh")),
    ])


def conv_residual():
    x = Input(shape=(9, 11, 4))
    c = Conv2D(4, 3, padding="same")(x)
    return Model(x, Activation("relu")(Add()([x, c])))


def pointwise_chain_and_rows():
    x = Input(shape=(6, 10))
    y = Activation("sigmoid")(Permute((2, 1))(x))  # the transpose is not fused; the chain after it is
    y = LayerNormalization()(Activation("silu")(y))
    return Model(x, Softmax()(y))


def fallbacks():
    # Grouped conv and a 'same' pool after a conv fit no fused template.
    return Sequential([
        Input(shape=(8, 8, 4)), Conv2D(4, 3, groups=2, activation="relu"),
        Conv2D(6, 1, activation="relu"),  # 1x1: a matmul
        MaxPooling2D(2, padding="same"), GlobalAveragePooling2D(),
    ])


def dropout_flatten_identities():
    return Sequential([Input(shape=(4, 5)), Dropout(0.5), Reshape((20,)), Flatten(), Dense(3)])


PATTERNS = {f.__name__: f for f in (dense_relu, dense_batchnorm_residual, conv_relu_maxpool, conv1d_relu_maxpool,
                                    causal_conv1d_stack, time_distributed_conv_pool_dense, conv_residual,
                                    pointwise_chain_and_rows, fallbacks, dropout_flatten_identities)}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_fusion_golden(name, golden):
    graph = PATTERNS[name]().to_graph()
    fused, _ = run_pipeline(graph)
    golden(f"fuse_{name}", "# before\n" + print_graph(graph) + "# after\n" + print_graph(fused))


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_fused_patterns_compute_what_the_model_does(name):
    model = PATTERNS[name]()
    randomize(model)
    assert_compiled_matches_reference(model, [torch.randn(3, *model.inputs[0].shape[1:])], kind="accumulating")


def test_fallbacks_stay_unfused_and_correct():
    fused, _ = run_pipeline(fallbacks().to_graph())
    plain = [n.op for n in fused.nodes if n.op != "kernel" and n.op != "reshape"]
    assert plain == ["conv2d"]  # the grouped conv runs on torch
    templates = [k.attrs["template"] for k in kernels_of(fused)]
    # Its bias and relu load with the 1x1 conv's A tiles (the matmul prologue).
    assert templates == ["matmul", "pool2d", "reduce"]
    assert [n.op for n in kernels_of(fused)[0].attrs["body"].nodes] == ["bias_add", "relu", "matmul", "bias_add", "relu"]


def test_conv1d_and_its_pool_fuse_into_one_kernel_as_conv2d_does():
    for make in (conv_relu_maxpool, conv1d_relu_maxpool):
        fused, _ = run_pipeline(make().to_graph())
        (kernel,) = kernels_of(fused)
        assert kernel.attrs["template"] == "conv2d"
        assert [n.op for n in kernel.attrs["body"].nodes] == ["conv2d", "bias_add", "relu", "max_pool2d"]
        assert {n.op for n in fused.nodes} <= {"kernel", "reshape"}  # the 1-D views: no copies
    # Causal padding is a pad (a pad_slice kernel) before the conv kernel; the second conv takes its pool.
    fused, _ = run_pipeline(causal_conv1d_stack().to_graph())
    assert [n.op for n in fused.nodes if n.op not in ("kernel", "reshape")] == []
    assert [k.attrs["template"] for k in kernels_of(fused)] == ["pad_slice", "conv2d", "conv2d", "reduce"]
    assert [n.op for n in kernels_of(fused)[2].attrs["body"].nodes] == ["conv2d", "bias_add", "relu", "max_pool2d"]


def test_time_distributed_layers_fuse_over_the_folded_batch():
    fused, _ = run_pipeline(time_distributed_conv_pool_dense().to_graph())
    conv, dense = kernels_of(fused)
    assert [n.op for n in conv.attrs["body"].nodes] == ["conv2d", "bias_add", "relu", "max_pool2d"]
    assert [n.op for n in dense.attrs["body"].nodes] == ["matmul", "bias_add", "tanh"]
    assert conv.outputs[0].shape == ("N*3", 3, 3, 4) and fused.outputs[0].shape == ("N", 3, 5)
    assert [n.op for n in fused.nodes if n.op != "kernel"] == ["reshape", "reshape", "reshape"]  # fold, view, unfold


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_on_generated_kernels_match_the_reference(path):
    for model in dsl.load(path).values():
        randomize(model)
        rng = np.random.default_rng(0)
        inputs = []
        for t in model.inputs:
            shape = (2, *[d or 6 for d in t.shape[1:]])
            if t.dtype.startswith("int"):
                inputs.append(torch.from_numpy(rng.integers(0, 50, size=shape).astype(t.dtype)))
            else:
                inputs.append(torch.from_numpy(rng.normal(size=shape).astype("float32")))
        assert_compiled_matches_reference(model, inputs, kind="accumulating")


def test_simplify_rules():
    b = GraphBuilder("g")
    x = b.input((None, 4, 6), "float32", "x")
    one = b.emit1("constant", [], value=1.0)
    two = b.emit1("add", [one, b.emit1("constant", [], value=1.0)])  # folds to 2.0
    y = b.emit1("mul", [x, one])  # x * 1 -> x
    y = b.emit1("transpose", [b.emit1("transpose", [y], perm=(0, 2, 1))], perm=(0, 2, 1))  # cancels
    y = b.emit1("reshape", [b.emit1("reshape", [y], shape=("N", 24))], shape=("N", 4, 6))  # back to x's shape
    a1 = b.emit1("sigmoid", [y])
    a2 = b.emit1("sigmoid", [y])  # CSE
    out = b.emit1("mul", [b.emit1("add", [a1, a2]), two])
    g = simplify(b.finish([out]))
    assert [n.op for n in g.nodes] == ["constant", "sigmoid", "add", "mul"]
    assert g.nodes[0].attrs["value"] == 2.0
    assert g.nodes[1].inputs[0].name == "x"
