"""The op registry: every record complete, shape rules agree with the references,
bad shapes raise ShapeError and bad attributes raise ArgumentError.

Reference values against independent computations live in test_op_reference.py.
"""

import numpy as np
import pytest
import torch

from kcomp.errors import ArgumentError, ShapeError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.opdef import REQUIRED, OpDef, attr
from kcomp.ir.registry import OPS, get_op
from kcomp.ir.types import BATCH, DTYPE_OF_TORCH, TORCH_DTYPES, dim_size, fold_dim

CONCRETE_BATCH = 3
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum", "zeros_where_masked")
REDUCTIONS = ("sum", "mean", "max")
POOLS = ("max_pool2d", "avg_pool2d")
ACTIVATIONS = tuple(sorted(name for name, op in OPS.items() if "activation" in op.traits))


def X(*shape, dtype="float32"):
    """A data input of the graph (a None first dim becomes the batch symbol)."""
    return ("x", shape, dtype)


def W(*shape, dtype="float32"):
    """A weight: a static shape."""
    return ("w", shape, dtype)


def _kernel_body():
    """A fused kernel's body: relu(x + bias), as the fusion pass builds one."""
    b = GraphBuilder("body")
    x, bias = b.input((None, 5, 7), "float32", ""), b.input((7,), "float32", "")
    return b.finish([b.emit1("relu", [b.emit1("add", [x, bias])])])


# (op, inputs, attrs): valid uses of every op, built with a symbolic batch.
EXAMPLES = [
    ("rsqrt", [X(None, 5, 7)], {}),
    ("resize", [X(None, 9, 11, 3)], {"height": 4, "width": 13}),
    ("resize", [X(None, 9, 11, 3)], {"height": 4, "width": 13, "interpolation": "nearest"}),
    ("resize_grad", [X(None, 4, 13, 3)], {"height": 9, "width": 11}),
    ("constant_array", [], {"values": (0.5, 2.0, -1.0)}),
    ("kernel", [X(None, 5, 7), W(7)], {"template": "pointwise", "body": _kernel_body(), "roles": ("anchor", "epilogue")}),
    *[(op, [X(None, 5, 7), W(7)], {}) for op in BINARY],
    *[(op, [X(None, 1, 7), X(None, 5, 1)], {}) for op in BINARY],
    *[(op, [X(None, 5, 7), W(5, 1)], {}) for op in BINARY],
    ("neg", [X(None, 5, 7)], {}),
    ("constant", [], {"value": 2.5}),
    ("constant", [], {"value": 3, "dtype": "int32"}),
    ("cast", [X(None, 5)], {"dtype": "int32"}),
    ("cast", [X(None, 5, dtype="int64")], {"dtype": "float64"}),
    *[(op, [X(None, 5, 7)], {}) for op in ACTIVATIONS],
    ("softmax", [X(None, 5, 7)], {"axis": 1}),
    ("log_softmax", [X(None, 5, 7)], {"axis": 0}),
    ("relu", [X(None, 5, 7)], {"negative_slope": 0.1, "max_value": 6.0, "threshold": 0.5}),
    ("gelu", [X(None, 5, 7)], {"approximate": True}),
    ("matmul", [X(None, 5, 7), W(7, 4)], {}),
    ("matmul", [X(None, 5), W(5, 4)], {}),
    ("matmul", [X(None, 3, 4, 5), X(None, 3, 5, 6)], {}),
    ("matmul", [X(None, 1, 4, 5), W(3, 5, 6)], {}),
    ("matmul", [W(4, 5), W(3, 5, 6)], {}),
    ("bias_add", [X(None, 5, 7), W(7)], {}),
    *[(op, [X(None, 5, 7)], {}) for op in REDUCTIONS],
    *[(op, [X(None, 5, 7)], {"axes": (1,)}) for op in REDUCTIONS],
    *[(op, [X(None, 5, 7)], {"axes": (-1, 0), "keepdims": True}) for op in REDUCTIONS],
    *[(op, [X(None, 5, 7)], {"axes": None, "keepdims": True}) for op in REDUCTIONS],
    ("reshape", [X(None, 6, 5)], {"shape": (BATCH, 30)}),
    ("reshape", [X(None, 6, 5)], {"shape": (BATCH, 2, 3, 5)}),
    ("reshape", [X(None, 6)], {"shape": (2, BATCH, 3)}),
    ("reshape", [W(4, 6)], {"shape": (2, 12)}),
    # The batch folded with known axes and back (TimeDistributed: "N*6" is the batch times 6).
    ("reshape", [X(None, 6, 5)], {"shape": (fold_dim(BATCH, 6), 5)}),
    ("reshape", [X(None, 6, 5)], {"shape": (fold_dim(BATCH, 30),)}),
    ("reshape", [X(None, 2, 3, 5)], {"shape": (fold_dim(BATCH, 2), 15)}),
    ("transpose", [X(None, 5, 7)], {"perm": (0, 2, 1)}),
    ("transpose", [X(None, 5, 7)], {"perm": (2, 0, 1)}),
    ("transpose", [W(4, 6)], {"perm": (1, 0)}),
    ("concat", [X(None, 5, 2), X(None, 5, 3)], {}),
    ("concat", [X(None, 2, 7), X(None, 3, 7)], {"axis": 1}),
    ("concat", [X(None, 5, 2)], {"axis": -1}),
    ("concat", [W(2, 3), W(4, 3), W(1, 3)], {"axis": 0}),
    ("conv2d", [X(None, 9, 11, 4), W(3, 3, 4, 6)], {}),
    ("conv2d", [X(None, 9, 11, 4), W(3, 3, 4, 6)], {"padding": "same", "strides": (2, 2)}),
    ("conv2d", [X(None, 9, 11, 4), W(3, 3, 4, 6)], {"dilation": (2, 2)}),
    ("conv2d", [X(None, 9, 11, 4), W(3, 3, 2, 6)], {"groups": 2, "padding": "same"}),
    ("conv2d", [X(None, 9, 11, 4), W(2, 4, 4, 5)], {"padding": "same", "strides": (2, 1)}),
    *[(op, [X(None, 9, 11, 3)], {"pool_size": (2, 2), "strides": (2, 2)}) for op in POOLS],
    *[(op, [X(None, 9, 11, 3)], {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"}) for op in POOLS],
    *[(op, [X(None, 9, 11, 3)], {"pool_size": (3, 2), "strides": (1, 1), "padding": "same"}) for op in POOLS],
    *[
        example
        for op in ("batch_norm", "batch_norm_train")
        for example in [
            (op, [X(None, 5, 7), W(7), W(7), W(7), W(7)], {}),
            (op, [X(None, 5, 7), W(5), W(5), W(5), W(5)], {"axis": 1}),
            (op, [X(None, 5, 7), W(7), W(7), W(7)], {"center": False}),
            (op, [X(None, 5, 7), W(7), W(7), W(7)], {"scale": False}),
            (op, [X(None, 5, 7), W(7), W(7)], {"center": False, "scale": False}),
        ]
    ],
    ("layer_norm", [X(None, 5, 7), W(7), W(7)], {}),
    ("layer_norm", [X(None, 5, 7), W(5, 7), W(5, 7)], {"axes": (1, 2)}),
    ("layer_norm", [X(None, 5, 7)], {"center": False, "scale": False}),
    ("layer_norm", [X(None, 5, 7), W(7)], {"center": False}),
    ("dropout", [X(None, 5, 7)], {"rate": 0.5}),
    ("dropout", [X(None, 5, 7)], {"rate": 0.5, "training": True, "seed": 3}),
    ("augment_params", [X(None, 5, 7, 3)], {"kind": "rotation", "factor": (-0.2, 0.2), "seed": 3}),
    ("augment_params", [X(None, 5, 7, 3), W()], {"kind": "contrast", "factor": (0.0, 0.2)}),
    ("random_brightness", [X(None, 5, 7, 3), W()], {"factor": (-0.2, 0.2, 255.0), "seed": 2, "image_size": 105}),
    ("random_contrast", [X(None, 5, 7, 3), X(None, 1, 1, 3), W()], {"factor": (0.0, 0.2), "seed": 2, "image_size": 105}),
    ("random_contrast", [X(None, 5, 7, 3), X(None, 1, 1, 1)], {"factor": (0.3, 0.2), "image_size": 105}),
    ("affine_transform", [X(None, 5, 7, 3), X(None, 8)], {}),
    ("affine_transform", [X(None, 5, 7, 3), X(None, 8)], {"output_size": (3, 4), "interpolation": "nearest",
                                                          "fill_mode": "reflect"}),
    ("affine_transform_grad", [X(None, 5, 7, 3), X(None, 8)], {"input_size": (6, 8), "fill_mode": "wrap"}),
    ("embedding", [X(None, 6, dtype="int64"), W(10, 4)], {}),
    ("embedding", [X(None, dtype="int32"), W(10, 4)], {}),
    ("lstm", [X(None, 6, 3), W(3, 16), W(4, 16), W(16)], {}),
    ("lstm", [X(None, 6, 3), W(3, 16), W(4, 16), W(16)], {"return_sequences": True, "go_backwards": True}),
    ("lstm", [X(None, 6, 3), W(3, 16), W(4, 16)], {"use_bias": False}),
    ("gru", [X(None, 6, 3), W(3, 12), W(4, 12), W(2, 12)], {}),
    ("gru", [X(None, 6, 3), W(3, 12), W(4, 12), W(12)], {"reset_after": False, "return_sequences": True}),
    ("simple_rnn", [X(None, 6, 3), W(3, 4), W(4, 4), W(4)], {}),
    ("simple_rnn", [X(None, 6, 3), W(3, 4), W(4, 4)], {"use_bias": False, "return_sequences": True}),
    # -- losses, metrics and the optimizer (kcomp/ir/ops/loss_math.py, metric_ops.py, optim.py)
    *[(op, [X(None, 5, 7)], {}) for op in ("abs", "sign", "square")],
    *[(op, [W(5, 7)], {}) for op in ("log", "sqrt")],
    ("power", [W(5, 7)], {"exponent": 2.5}),  # positive weights (W draws them): log and sqrt are defined
    ("one_hot", [X(None, dtype="int32")], {"depth": 4}),
    ("correct", [X(None, 4), X(None, 4)], {"kind": "categorical"}),
    ("correct", [X(None, 1), X(None, 1)], {"kind": "binary"}),
    ("confusion_counts", [X(None, 1), X(None, 1)], {"thresholds": (0.25, 0.5)}),
    ("confusion_matrix", [X(None, 4), X(None, 4)], {"num_classes": 4, "sparse_y_true": False, "sparse_y_pred": False}),
    ("softmax_cross_entropy", [W(5, 4), W(5, 4)], {}),  # positive probabilities and soft labels
    ("softmax_cross_entropy", [X(None, 4), X(None, dtype="int32")], {}),
    ("softmax_cross_entropy_grad", [W(5, 4), W(5, 4), X(5)], {}),
    # params, grads, then each parameter's slots (Adam: m, v), then the learning rate and the step.
    ("optimizer_update", [W(3, 2), W(4), W(3, 2), W(4), W(3, 2), W(3, 2), W(4), W(4), W(), W()],
     {"algorithm": "adam", "count": 2}),
]
# ---- backward ops of conv2d, pooling, embedding, batch statistics and recurrent layers (ops/conv_grad.py, gather.py, recurrent_grad.py)
EXAMPLES += [
    ("conv2d_backprop_input", [X(None, 7, 9, 6), W(3, 3, 4, 6)], {"input_size": (9, 11)}),
    ("conv2d_backprop_input", [X(None, 5, 6, 6), W(3, 3, 2, 6)],
     {"input_size": (9, 11), "strides": (2, 2), "padding": "same", "groups": 2}),
    ("conv2d_backprop_input", [X(None, 5, 7, 5), W(3, 3, 4, 5)], {"input_size": (9, 11), "dilation": (2, 2)}),
    ("conv2d_backprop_filter", [X(None, 9, 11, 4), X(None, 7, 9, 6)], {"kernel_size": (3, 3)}),
    ("conv2d_backprop_filter", [X(None, 9, 11, 4), X(None, 5, 6, 6)],
     {"kernel_size": (3, 3), "strides": (2, 2), "padding": "same", "groups": 2}),
    ("max_pool2d_grad", [X(None, 9, 11, 3), X(None, 4, 5, 3)], {"pool_size": (3, 3), "strides": (2, 2)}),
    ("max_pool2d_grad", [X(None, 9, 11, 3), X(None, 5, 6, 3)], {"pool_size": (3, 3), "strides": (2, 2), "padding": "same"}),
    ("avg_pool2d_grad", [X(None, 4, 5, 3)], {"input_size": (9, 11), "pool_size": (3, 3), "strides": (2, 2)}),
    ("avg_pool2d_grad", [X(None, 5, 6, 3)], {"input_size": (9, 11), "pool_size": (3, 3), "strides": (2, 2), "padding": "same"}),
    ("embedding_grad", [X(None, 6, dtype="int64"), X(None, 6, 4)], {"input_dim": 10}),
    ("embedding_grad", [X(None, dtype="int32"), X(None, 4)], {"input_dim": 10}),
    ("sort_ids", [X(None, 6, dtype="int32")], {}),
    ("embedding_grad_chunks", [X(None, 6, dtype="int64"), X(None, 6, dtype="int64"), X(None, 6, 4)], {"chunk": 4}),
    ("embedding_grad_sorted", [X(None, 6, dtype="int64"), X(None, 6, 4)], {"input_dim": 10, "chunk": 4, "dtype": "float32"}),
    ("lstm_grad", [X(None, 6, 3), W(3, 16), W(4, 16), W(16), X(None, 4), X(None, 4)], {"grad_outputs": (0, 2)}),
    ("lstm_grad", [X(None, 6, 3), W(3, 16), W(4, 16), X(None, 6, 4)],
     {"use_bias": False, "return_sequences": True, "grad_outputs": (0,)}),
    ("gru_grad", [X(None, 6, 3), W(3, 12), W(4, 12), W(2, 12), X(None, 4)], {"grad_outputs": (1,)}),
    ("gru_grad", [X(None, 6, 3), W(3, 12), W(4, 12), X(None, 6, 4), X(None, 4)],
     {"reset_after": False, "use_bias": False, "return_sequences": True, "grad_outputs": (0, 1)}),
    ("simple_rnn_grad", [X(None, 6, 3), W(3, 4), W(4, 4), W(4), X(None, 6, 4), X(None, 4)],
     {"return_sequences": True, "go_backwards": True, "grad_outputs": (0, 1)}),
]
# ---- end of the conv_grad.py block

EXAMPLES += [  # the ops gradients are built from (kcomp/ir/ops/grad_support.py)
    ("greater", [X(None, 5, 7), W(7)], {}),
    ("greater_equal", [W(), X(None, 5, 7)], {}),
    ("threshold_grad", [X(None, 5, 7), X(None, 5, 7)], {"threshold": 0.0}),
    ("equal", [X(None, 5, 7), X(None, 5, 7)], {}),
    ("is_finite", [X(None, 5, 7)], {}),
    ("clip", [X(None, 5, 7)], {"low": -1.0, "high": 1.0}),  # kcomp/ir/ops/elementwise.py: Keras's clip
    ("broadcast_like", [X(None, 1, 7), X(None, 5, 7)], {}),
    ("broadcast_like", [W(), X(None, 5)], {}),
    ("count", [X(None, 5, 7)], {"axes": (0, 2)}),
    ("replica_sum", [X(None, 5, 7), W(7), W()], {}),  # a data-parallel job's sums (kcomp/ir/ops/collective.py)
    ("all_reduce", [X(None, 5, 7), W(7)], {}),  # the fused data-parallel step's sums (kcomp/ir/ops/collective.py)
    ("slice", [X(None, 5, 7)], {"axis": 1, "start": 1, "stop": 4}),
    ("pad", [X(None, 5, 7)], {"axis": -1, "before": 2, "after": 1}),
    ("erf", [X(None, 5, 7)], {}),
    ("flip", [X(None, 5, 7)], {"axis": 1}),
    ("shift", [X(None, 5, 7)], {"axis": 1, "period": 5, "by": 1}),  # an RNN's h_{t-1} (kcomp/ir/ops/shape.py)
]
EXAMPLES += [  # the LSTM's recurrence alone (kcomp/ir/ops/recurrent_scan.py)
    ("lstm_scan", [X(None, 6, 16), W(4, 16)], {}),
    ("lstm_scan", [X(None, 6, 16), W(4, 16)], {"save": True}),
    ("lstm_scan_grad", [W(4, 16), X(None, 6, 4), X(None, 6, 16), X(None, 6, 4), X(None, 4), X(None, 4)],
     {"has_dseq": True, "has_dh": True, "has_dc": True}),
    ("lstm_scan_grad", [W(4, 16), X(None, 6, 4), X(None, 6, 16), X(None, 4)],
     {"has_dseq": False, "has_dh": False, "has_dc": True}),
]
EXAMPLES += [  # the GRU's and SimpleRNN's recurrences alone (recurrent_scan_gru.py, recurrent_scan_simple_rnn.py)
    ("gru_scan", [X(None, 6, 12), W(4, 12), W(12)], {}),
    ("gru_scan", [X(None, 6, 12), W(4, 12)], {"reset_after": False, "save": True}),
    ("gru_scan_grad", [W(4, 12), X(None, 6, 4), X(None, 6, 16), X(None, 6, 4), X(None, 4)],
     {"has_dseq": True, "has_dh": True}),
    ("gru_scan_grad", [W(4, 12), X(None, 6, 4), X(None, 6, 12), X(None, 4)],
     {"reset_after": False, "has_dseq": False, "has_dh": True}),
    ("simple_rnn_scan", [X(None, 6, 4), W(4, 4)], {"activation": "relu"}),
    ("simple_rnn_scan_grad", [W(4, 4), X(None, 6, 4), X(None, 6, 4)], {"has_dseq": True, "has_dh": False}),
    # an activation whose derivative needs its input: the forward saves the pre-activations, the backward reads them
    ("simple_rnn_scan", [X(None, 6, 4), W(4, 4)], {"activation": "elu", "save": True}),
    ("simple_rnn_scan_grad", [W(4, 4), X(None, 6, 4), X(None, 6, 4), X(None, 4)],
     {"activation": "gelu", "has_dseq": False, "has_dh": True}),
    # with recurrent dropout masks (batch, gates, units) after the optional step mask
    ("gru_scan", [X(None, 6, 12), W(4, 12), W(12), X(None, 6), X(None, 3, 4)],
     {"masked": True, "recurrent_masks": True}),
    ("gru_scan_grad", [W(4, 12), X(None, 6, 4), X(None, 6, 12), X(None, 3, 4), X(None, 4)],
     {"reset_after": False, "recurrent_masks": True, "has_dseq": False, "has_dh": True}),
    ("simple_rnn_scan", [X(None, 6, 4), W(4, 4), X(None, 1, 4)], {"recurrent_masks": True}),
    ("simple_rnn_scan_grad", [W(4, 4), X(None, 6, 4), X(None, 1, 4), X(None, 4)],
     {"recurrent_masks": True, "has_dseq": False, "has_dh": True}),
]
FIRST_EXAMPLE = {}
for _example in EXAMPLES:
    FIRST_EXAMPLE.setdefault(_example[0], _example)


def example_id(example):
    op, inputs, attrs = example
    shapes = "x".join(str(s[1]) for s in inputs).replace(" ", "")
    return f"{op}-{shapes}-{attrs}".replace(" ", "")


def build(op, inputs, attrs):
    """Emit `op` on inputs described by X/W; returns (builder, input values, outputs)."""
    b = GraphBuilder()
    values = []
    for k, (kind, shape, dtype) in enumerate(inputs):
        if kind == "x":
            values.append(b.input(shape, dtype, f"x{k}"))
        else:
            values.append(b.param(k, shape, dtype, f"w{k}"))
    outputs = b.emit(op, values, **attrs)
    return b, values, outputs


def concrete(shape):
    return tuple(CONCRETE_BATCH if d is None else dim_size(d, {BATCH: CONCRETE_BATCH}) for d in shape)


def make_tensor(shape, dtype, rng):
    """Never zeros: positive floats (valid as variances too), small positive ints (valid ids)."""
    shape = concrete(shape)
    if dtype in ("int32", "int64"):
        return torch.tensor(rng.integers(1, 4, size=shape), dtype=TORCH_DTYPES[dtype])
    return torch.tensor(rng.uniform(0.5, 2.0, size=shape), dtype=TORCH_DTYPES[dtype])


def run_reference(op, inputs, attrs, seed=0):
    """Run the registry reference the way an executor does: on the node's resolved attrs."""
    b, _, _ = build(op, inputs, attrs)
    node = b.nodes[-1]
    rng = np.random.default_rng(seed)
    tensors = [make_tensor(shape, dtype, rng) for _, shape, dtype in inputs]
    out = OPS[op].reference(*tensors, **node.attrs)
    return node, out if isinstance(out, tuple) else (out,)


# ---------------------------------------------------------------- 1. complete records


@pytest.mark.parametrize("name", sorted(OPS))
def test_attr_defaults_pass_their_own_check(name):
    for key, spec in OPS[name].attrs.items():
        assert isinstance(spec.types, tuple) and spec.types
        if spec.default is REQUIRED:
            continue
        assert spec.check(name, key, spec.default) == spec.default
        if spec.choices is not None and spec.default is not None:
            assert spec.default in spec.choices


@pytest.mark.parametrize("name", sorted(OPS))
def test_num_outputs_matches_shape_rule_and_reference(name):
    op, inputs, attrs = FIRST_EXAMPLE[name]
    lo, hi = OPS[name].num_inputs
    assert lo <= len(inputs) and (hi is None or len(inputs) <= hi)
    specs = [v.spec for v in build(op, inputs, attrs)[1]]
    inferred = OPS[name].infer(specs, **OPS[name].resolve_attrs(attrs))
    _, outs = run_reference(op, inputs, attrs)
    expected = OPS[name].num_outputs if OPS[name].num_outputs is not None else len(inferred)
    assert len(inferred) == expected and len(outs) == expected


def test_every_op_has_a_shape_example():
    assert set(FIRST_EXAMPLE) == set(OPS)


def test_get_op_unknown_name_suggests_the_nearest():
    with pytest.raises(ArgumentError, match="reluu.*Did you mean 'relu'"):
        get_op("reluu")


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"doc": ""}, "doc"),
        ({"traits": {"elementwise", "shiny"}}, "shiny"),
        ({"name": "Bad-Name"}, "Bad-Name"),
        ({"infer": None}, "callable"),
        ({"num_inputs": (2, 1)}, "num_inputs"),
        ({"attrs": {"axis": -1}}, "axis"),
        ({"traits": set()}, "trait"),
        ({"vjp": "grad"}, "vjp"),
        ({"lowering": "tl.exp({a})"}, "lowering"),
        ({"num_outputs": 0}, "num_outputs"),
    ],
)
def test_incomplete_record_fails_at_construction(fields, match):
    base = dict(
        name="probe", doc="A probe.", num_inputs=(1, 1), attrs={"axis": attr(int, -1)},
        infer=lambda inputs, axis: inputs, reference=lambda x, axis: x, traits={"unary"},
    )
    with pytest.raises(TypeError, match=match):
        OpDef(**{**base, **fields})


# ---------------------------------------------------------------- 3. shape rules


@pytest.mark.parametrize("example", EXAMPLES, ids=example_id)
def test_inferred_shape_and_dtype_match_the_reference(example):
    op, inputs, attrs = example
    node, outs = run_reference(op, inputs, attrs)
    assert len(outs) == len(node.outputs)
    for value, out in zip(node.outputs, outs):
        assert concrete(value.shape) == tuple(out.shape), f"{op}: inferred {value.shape}, reference {tuple(out.shape)}"
        assert value.dtype == DTYPE_OF_TORCH[out.dtype], f"{op}: inferred {value.dtype}, reference {out.dtype}"


def test_a_folded_batch_unfolds_and_runs_at_any_batch_size():
    """TimeDistributed's fold: (N, 6, 5) -> (N*6, 5) -> relu -> (N, 6, 5); the plan sizes N*6 from N."""
    from kcomp.ir.printer import print_graph
    from kcomp.runtime.plan import bind_symbols, concrete as plan_concrete

    b = GraphBuilder("fold")
    x = b.input((None, 6, 5), "float32", "x")
    folded = b.emit1("reshape", [x], shape=(fold_dim(BATCH, 6), 5))
    y = b.emit1("reshape", [b.emit1("relu", [folded])], shape=(BATCH, 6, 5))
    graph = b.finish([y])
    assert folded.shape == ("N*6", 5) and y.shape == (BATCH, 6, 5)
    assert "f32[N*6,5]" in print_graph(graph)
    assert fold_dim(fold_dim(BATCH, 6), 2) == "N*12" and fold_dim(4, 3) == 12
    sizes = bind_symbols(graph, [torch.zeros(7, 6, 5)])
    assert plan_concrete(folded, sizes) == (42, 5)
    assert dim_size("?3*4", {"?3": 2}) == 8


def test_shape_rule_keeps_the_batch_symbol():
    b = GraphBuilder()
    x = b.input((None, 5), "float32", "x")
    assert b.emit1("relu", [x]).shape == (BATCH, 5)
    kernel = b.param("k", (5, 3), "float32", "kernel")
    assert b.emit1("matmul", [x, kernel]).shape == (BATCH, 3)
    assert b.emit1("sum", [x], axes=(0,)).shape == (5,)


# Integer inputs that a shape rule accepts must run in the reference and keep the
# inferred dtype (an executor allocates the output from the inferred dtype).
INT_EXAMPLES = [
    *[(op, [X(None, 5, dtype="int32"), W(5, dtype="int32")], {}) for op in BINARY],
    ("neg", [X(None, 5, dtype="int32")], {}),
    ("bias_add", [X(None, 5, dtype="int32"), W(5, dtype="int32")], {}),
    *[(op, [X(None, 5, dtype="int32")], {"axes": (1,)}) for op in REDUCTIONS],
    ("reshape", [X(None, 6, dtype="int32")], {"shape": (BATCH, 2, 3)}),
    ("transpose", [X(None, 6, dtype="int32")], {"perm": (1, 0)}),
    ("concat", [X(None, 2, dtype="int32"), X(None, 3, dtype="int32")], {}),
    *[(op, [X(None, 4, 5, 2, dtype="int32")], {"pool_size": (2, 2), "strides": (2, 2)}) for op in POOLS],
    ("cast", [X(None, 5, dtype="int32")], {"dtype": "int64"}),
]


@pytest.mark.parametrize("example", INT_EXAMPLES, ids=example_id)
def test_integer_inputs_accepted_by_the_shape_rule_keep_their_dtype(example):
    op, inputs, attrs = example
    try:
        build(op, inputs, attrs)
    except ShapeError:
        return  # refusing integers is a valid choice for an op
    node, outs = run_reference(op, inputs, attrs)
    for value, out in zip(node.outputs, outs):
        assert value.dtype == DTYPE_OF_TORCH[out.dtype], f"{op}: inferred {value.dtype}, reference {out.dtype}"
        assert concrete(value.shape) == tuple(out.shape)


BAD_SHAPES = [
    ("matmul-inner", "matmul", [X(None, 5), W(6, 4)], {}),
    ("matmul-inner-rank3", "matmul", [X(None, 3, 5), W(4, 2)], {}),
    ("matmul-batch", "matmul", [W(2, 4, 5), W(3, 5, 6)], {}),
    ("matmul-rank1", "matmul", [W(5), W(5, 4)], {}),
    ("matmul-dtypes", "matmul", [X(None, 5), W(5, 4, dtype="float64")], {}),
    ("matmul-int", "matmul", [X(None, 5, dtype="int32"), W(5, 4, dtype="int32")], {}),
    ("add-broadcast", "add", [X(None, 5, 7), W(6)], {}),
    ("mul-broadcast", "mul", [X(None, 5, 7), W(4, 7)], {}),
    ("add-batch-vs-fixed", "add", [X(None, 5), W(3, 5)], {}),
    ("sub-dtypes", "sub", [X(None, 5), W(5, dtype="float64")], {}),
    ("bias_add-length", "bias_add", [X(None, 5, 7), W(5)], {}),
    ("bias_add-rank", "bias_add", [X(None, 5, 7), W(1, 7)], {}),
    ("conv2d-channels", "conv2d", [X(None, 9, 11, 4), W(3, 3, 3, 6)], {}),
    ("conv2d-groups", "conv2d", [X(None, 9, 11, 4), W(3, 3, 4, 6)], {"groups": 2}),
    ("conv2d-filters-groups", "conv2d", [X(None, 9, 11, 4), W(3, 3, 2, 5)], {"groups": 2}),
    ("conv2d-window", "conv2d", [X(None, 2, 5, 4), W(3, 3, 4, 6)], {}),
    ("conv2d-dilated-window", "conv2d", [X(None, 4, 5, 4), W(3, 3, 4, 6)], {"dilation": (2, 2)}),
    ("conv2d-input-rank", "conv2d", [X(None, 9, 4), W(3, 3, 4, 6)], {}),
    ("conv2d-kernel-rank", "conv2d", [X(None, 9, 11, 4), W(3, 4, 6)], {}),
    ("conv2d-stride0", "conv2d", [X(None, 9, 11, 4), W(3, 3, 4, 6)], {"strides": (0, 1)}),
    ("conv2d-symbolic-height", "conv2d", [X(None, None, 11, 4), W(3, 3, 4, 6)], {}),
    ("max_pool2d-window", "max_pool2d", [X(None, 2, 5, 1)], {"pool_size": (3, 3), "strides": (1, 1)}),
    ("avg_pool2d-window", "avg_pool2d", [X(None, 5, 2, 1)], {"pool_size": (3, 3), "strides": (1, 1)}),
    ("pool-rank", "max_pool2d", [X(None, 9, 3)], {"pool_size": (2, 2), "strides": (2, 2)}),
    ("pool-size-triple", "avg_pool2d", [X(None, 9, 9, 3)], {"pool_size": (2, 2, 2), "strides": (2, 2)}),
    ("concat-mismatch", "concat", [X(None, 5, 2), X(None, 6, 3)], {}),
    ("concat-rank", "concat", [X(None, 5, 2), X(None, 2)], {}),
    ("concat-dtypes", "concat", [X(None, 5, 2), X(None, 5, 3, dtype="float64")], {}),
    ("concat-axis", "concat", [X(None, 5, 2), X(None, 5, 3)], {"axis": 3}),
    ("concat-batch-axis", "concat", [X(None, 5), X(None, 5)], {"axis": 0}),
    ("reshape-count", "reshape", [X(None, 6, 5)], {"shape": (BATCH, 31)}),
    ("reshape-static-count", "reshape", [W(4, 6)], {"shape": (5, 5)}),
    ("reshape-drops-batch", "reshape", [X(None, 6)], {"shape": (18,)}),
    ("reshape-minus-one", "reshape", [X(None, 6)], {"shape": (BATCH, -1)}),
    ("reshape-zero", "reshape", [X(None, 6)], {"shape": (BATCH, 0, 6)}),
    ("reshape-fold-count", "reshape", [X(None, 6, 5)], {"shape": (fold_dim(BATCH, 5), 5)}),
    ("reshape-fold-and-keep", "reshape", [X(None, 6, 5)], {"shape": (fold_dim(BATCH, 6), BATCH)}),
    ("reshape-fold-other-symbol", "reshape", [X(None, None, 5)], {"shape": (fold_dim(BATCH, 5), 2)}),
    ("transpose-short", "transpose", [X(None, 5, 7)], {"perm": (0, 1)}),
    ("transpose-repeat", "transpose", [X(None, 5, 7)], {"perm": (0, 0, 1)}),
    ("sum-axis-range", "sum", [X(None, 5, 7)], {"axes": (3,)}),
    ("mean-axis-repeat", "mean", [X(None, 5, 7)], {"axes": (1, -2)}),
    ("softmax-axis", "softmax", [X(None, 5, 7)], {"axis": -4}),
    ("relu-int", "relu", [X(None, 5, dtype="int32")], {}),
    ("batch_norm-param", "batch_norm", [X(None, 5, 7), W(5), W(5), W(5), W(5)], {}),
    ("batch_norm-arity", "batch_norm", [X(None, 5, 7), W(7), W(7), W(7), W(7)], {"center": False}),
    ("batch_norm_train-arity", "batch_norm_train", [X(None, 5, 7), W(7), W(7), W(7)], {}),
    ("layer_norm-param", "layer_norm", [X(None, 5, 7), W(5), W(5)], {}),
    ("layer_norm-two-axes-param", "layer_norm", [X(None, 5, 7), W(7), W(7)], {"axes": (1, 2)}),
    ("layer_norm-axis-range", "layer_norm", [X(None, 5, 7)], {"axes": (3,), "center": False, "scale": False}),
    ("layer_norm-axis-repeat", "layer_norm", [X(None, 5, 7)], {"axes": (2, -1), "center": False, "scale": False}),
    ("dropout-rate-one", "dropout", [X(None, 5)], {"rate": 1.0}),
    ("dropout-rate-negative", "dropout", [X(None, 5)], {"rate": -0.1}),
    ("embedding-float-ids", "embedding", [X(None, 6), W(10, 4)], {}),
    ("embedding-table-rank", "embedding", [X(None, 6, dtype="int64"), W(10)], {}),
    ("lstm-kernel", "lstm", [X(None, 6, 3), W(3, 12), W(4, 16), W(16)], {}),
    ("lstm-recurrent", "lstm", [X(None, 6, 3), W(3, 16), W(4, 12), W(16)], {}),
    ("lstm-bias", "lstm", [X(None, 6, 3), W(3, 16), W(4, 16), W(12)], {}),
    ("lstm-input-rank", "lstm", [X(None, 3), W(3, 16), W(4, 16), W(16)], {}),
    ("lstm-bias-not-used", "lstm", [X(None, 6, 3), W(3, 16), W(4, 16), W(16)], {"use_bias": False}),
    ("gru-reset-after-bias", "gru", [X(None, 6, 3), W(3, 12), W(4, 12), W(12)], {}),
    ("gru-reset-before-bias", "gru", [X(None, 6, 3), W(3, 12), W(4, 12), W(2, 12)], {"reset_after": False}),
    ("simple_rnn-missing-bias", "simple_rnn", [X(None, 6, 3), W(3, 4), W(4, 4)], {}),
    ("gru_scan-recurrent-bias-without-reset-after", "gru_scan", [X(None, 6, 12), W(4, 12), W(12)], {"reset_after": False}),
    ("gru_scan-recurrent-bias-length", "gru_scan", [X(None, 6, 12), W(4, 12), W(8)], {}),
    ("gru_scan-gates", "gru_scan", [X(None, 6, 16), W(4, 16)], {}),
    ("gru_scan_grad-saved-width", "gru_scan_grad", [W(4, 12), X(None, 6, 4), X(None, 6, 12), X(None, 4)],
     {"has_dseq": False, "has_dh": True}),
    ("gru_scan_grad-gradient-count", "gru_scan_grad", [W(4, 12), X(None, 6, 4), X(None, 6, 16), X(None, 4)],
     {"has_dseq": True, "has_dh": True}),
    ("simple_rnn_scan-recurrent", "simple_rnn_scan", [X(None, 6, 4), W(4, 8)], {}),
    ("simple_rnn_scan_grad-d_h", "simple_rnn_scan_grad", [W(4, 4), X(None, 6, 4), X(None, 6)],
     {"has_dseq": False, "has_dh": True}),
    ("gru_scan-recurrent-masks-gates", "gru_scan", [X(None, 6, 12), W(4, 12), X(None, 4, 4)],
     {"reset_after": False, "recurrent_masks": True}),
    ("gru_scan-recurrent-masks-missing", "gru_scan", [X(None, 6, 12), W(4, 12), X(None, 6)],
     {"reset_after": False, "masked": True, "recurrent_masks": True}),
    ("augment_params-unbatched", "augment_params", [X(None, 5, 7)], {"kind": "zoom", "factor": (0.1, 0.2)}),
    ("affine_transform-transform-width", "affine_transform", [X(None, 5, 7, 3), X(None, 6)], {}),
    ("simple_rnn_scan-recurrent-masks-missing", "simple_rnn_scan", [X(None, 6, 4), W(4, 4)], {"recurrent_masks": True}),
    ("simple_rnn_scan_grad-recurrent-masks-units", "simple_rnn_scan_grad", [W(4, 4), X(None, 6, 4), X(None, 1, 5),
                                                                             X(None, 4)],
     {"recurrent_masks": True, "has_dseq": False, "has_dh": True}),
]


@pytest.mark.parametrize("op, inputs, attrs", [c[1:] for c in BAD_SHAPES], ids=[c[0] for c in BAD_SHAPES])
def test_bad_shapes_raise_shape_error(op, inputs, attrs):
    with pytest.raises(ShapeError):
        build(op, inputs, attrs)


def test_shape_error_names_both_shapes():
    with pytest.raises(ShapeError) as info:
        build("matmul", [X(None, 5), W(6, 4)], {})
    assert "(None, 5)" in str(info.value) and "(6, 4)" in str(info.value)
    with pytest.raises(ShapeError) as info:
        build("add", [X(None, 5, 7), W(6)], {})
    assert "(None, 5, 7)" in str(info.value) and "(6,)" in str(info.value)


# ---------------------------------------------------------------- 4. attribute schema

BAD_ATTRS = [
    # unknown attributes
    ("relu", {"alpha": 0.1}, "alpha"), ("conv2d", {"kernel_size": (3, 3)}, "kernel_size"),
    ("sum", {"axis": (1,)}, "axis"),
    # missing required attributes
    ("dropout", {}, "rate"), ("reshape", {}, "shape"), ("transpose", {}, "perm"), ("cast", {}, "dtype"),
    ("constant", {}, "value"), ("max_pool2d", {"strides": (2, 2)}, "pool_size"),
    ("avg_pool2d", {"pool_size": (2, 2)}, "strides"),
    # wrong types
    ("softmax", {"axis": "1"}, "axis"), ("softmax", {"axis": 1.0}, "axis"), ("softmax", {"axis": True}, "axis"),
    ("softmax", {"axis": None}, "axis"), ("sum", {"axes": [1]}, "axes"), ("sum", {"keepdims": 1}, "keepdims"),
    ("conv2d", {"strides": 2}, "strides"), ("conv2d", {"groups": 1.0}, "groups"), ("dropout", {"rate": "0.5"}, "rate"),
    ("dropout", {"rate": 0.5, "seed": 1.5}, "seed"), ("dropout", {"rate": 0.5, "training": 1}, "training"),
    ("gelu", {"approximate": "tanh"}, "approximate"), ("relu", {"max_value": "6"}, "max_value"),
    ("leaky_relu", {"negative_slope": True}, "negative_slope"), ("batch_norm", {"epsilon": True}, "epsilon"),
    ("layer_norm", {"axes": -1}, "axes"), ("constant", {"value": True}, "value"), ("constant", {"value": "1"}, "value"),
    ("lstm", {"return_sequences": "yes"}, "return_sequences"),
    # values outside the choices
    ("conv2d", {"padding": "full"}, "padding"), ("cast", {"dtype": "float8"}, "dtype"),
    ("max_pool2d", {"pool_size": (2, 2), "strides": (2, 2), "padding": "SAME"}, "padding"),
    ("constant", {"value": 1.0, "dtype": "complex64"}, "dtype"), ("lstm", {"activation": "swish"}, "activation"),
    ("gru", {"recurrent_activation": "hard_tanh"}, "recurrent_activation"),
    ("simple_rnn_scan", {"save": True}, "save"),  # tanh's derivative reads h alone: nothing to save
    ("lstm_scan", {"save": True, "recurrent_activation": "softmax"}, "recurrent_activation"),
]


@pytest.mark.parametrize("op, attrs, name", BAD_ATTRS, ids=[f"{o}-{n}-{a}" for o, a, n in BAD_ATTRS])
def test_bad_attributes_raise_argument_error_naming_the_attr(op, attrs, name):
    _, inputs, _ = FIRST_EXAMPLE[op]
    with pytest.raises(ArgumentError) as info:
        build(op, inputs, attrs)
    assert name in str(info.value)
    assert op in str(info.value)


# Tuple attributes whose items have the wrong type: the schema should refuse them as it
# refuses a wrong top-level type, not let a bare TypeError (or a float axis) through.
BAD_TUPLE_ITEMS = [
    ("transpose", {"perm": (0, 2.0, 1)}, "perm"), ("transpose", {"perm": (0, "a", 1)}, "perm"),
    ("sum", {"axes": ("a",)}, "axes"), ("sum", {"axes": (1.0,)}, "axes"), ("layer_norm", {"axes": (1.0,)}, "axes"),
]


@pytest.mark.parametrize("op, attrs, name", BAD_TUPLE_ITEMS, ids=[f"{o}-{a}" for o, a, n in BAD_TUPLE_ITEMS])
def test_bad_tuple_items_raise_argument_error_naming_the_attr(op, attrs, name):
    test_bad_attributes_raise_argument_error_naming_the_attr(op, attrs, name)


@pytest.mark.parametrize(
    "op, inputs",
    [("relu", [X(None, 5), X(None, 5)]), ("add", [X(None, 5)]), ("constant", [X(None, 5)]), ("lstm", [X(None, 6, 3)])],
)
def test_wrong_number_of_inputs_raises_argument_error(op, inputs):
    attrs = {"value": 1.0} if op == "constant" else {}
    with pytest.raises(ArgumentError, match=op):
        build(op, inputs, attrs)


def test_resolve_attrs_fills_defaults_and_keeps_given():
    resolved = OPS["conv2d"].resolve_attrs({"padding": "same"})
    assert resolved == {"strides": (1, 1), "padding": "same", "dilation": (1, 1), "groups": 1}
    assert OPS["leaky_relu"].resolve_attrs({}) == {"negative_slope": 0.2}
    assert OPS["relu"].resolve_attrs({"max_value": 6}) == {"negative_slope": 0.0, "max_value": 6, "threshold": 0.0}
