"""Ops a layer's `call` is written in (Keras's keras.ops, for the ops kcomp has).

Each function emits one registry op. Called while a model is traced, its
inputs are IR Values and it appends a node to the graph being built; called
on concrete data (torch tensors, numpy arrays, weights) it runs the op's torch
reference at once. So a layer's `call` is written once and serves both.
"""

import threading
from contextlib import contextmanager

import numpy as np
import torch

from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Value
from kcomp.ir.registry import get_op
from kcomp.ir.ops.shape import resolve_reshape
from kcomp.ir.types import DTYPE_OF_TORCH, FLOAT_DTYPES, TORCH_DTYPES, TensorSpec
from kcomp.variables import Variable

_state = threading.local()


@contextmanager
def tracing(builder: GraphBuilder):
    """Make `builder` the graph that ops on IR Values append to."""
    saved = getattr(_state, "builder", None)
    _state.builder = builder
    try:
        yield builder
    finally:
        _state.builder = saved


def current_builder() -> GraphBuilder | None:
    return getattr(_state, "builder", None)


@contextmanager
def autocast(dtype: str | None):
    """Keras's AutocastScope: while it is open, a float weight read by an op (an autocast
    Variable) is cast to `dtype`; None closes any outer scope."""
    saved = getattr(_state, "autocast", None)
    _state.autocast = dtype
    try:
        yield
    finally:
        _state.autocast = saved


def autocast_dtype() -> str | None:
    return getattr(_state, "autocast", None)


def _autocast_to(var: Variable) -> str | None:
    """The dtype a weight is read in here: the autocast scope's, for an autocast float weight."""
    dtype = getattr(_state, "autocast", None)
    if dtype is None or not var.autocast or dtype == var.dtype or var.dtype not in FLOAT_DTYPES:
        return None
    return dtype


def _as_tensor(x):
    if isinstance(x, Variable):
        dtype = _autocast_to(x)
        return x.value if dtype is None else x.value.to(TORCH_DTYPES[dtype])
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return torch.from_numpy(x.astype(np.float32))
    return torch.as_tensor(x, dtype=torch.float32 if isinstance(x, float) else None)


def _as_value(x, builder: GraphBuilder, number_dtype: str = "float32") -> Value:
    if isinstance(x, Value):
        return x
    if isinstance(x, Variable):
        param = builder.param(x, x.shape, x.dtype, x.path, x.effectively_trainable)
        dtype = _autocast_to(x)
        return param if dtype is None else builder.emit1("cast", [param], dtype=dtype)
    if isinstance(x, (int, float)):
        return builder.emit1("constant", [], value=x, dtype=number_dtype)
    raise TypeError(f"cannot use {type(x).__name__} inside a traced model; use kcomp ops on its inputs")


def emit(op: str, *inputs, **attrs):
    """Run or record one op. Returns one result, or a tuple for multi-output ops.

    While a model is traced, an op on a traced value or on a weight is recorded (a weight's
    reshape in a layer's call is a node reading the parameter, not its value baked in)."""
    builder = current_builder()
    if builder is not None and any(isinstance(x, (Value, Variable)) for x in inputs):
        tensors = {i: _as_value(x, builder) for i, x in enumerate(inputs) if not isinstance(x, (int, float))}
        # A Python number takes the float dtype of the tensors beside it (x * 0.5 on bfloat16 stays bfloat16).
        floats = [v.dtype for v in tensors.values() if v.dtype in FLOAT_DTYPES]
        number_dtype = floats[0] if floats else "float32"
        outs = builder.emit(op, [tensors[i] if i in tensors else _as_value(x, builder, number_dtype)
                                 for i, x in enumerate(inputs)], **attrs)
    else:
        opdef = get_op(op)
        tensors = [_as_tensor(x) for x in inputs]
        opdef.check_arity(len(tensors))
        attrs = opdef.resolve_attrs(attrs)
        opdef.infer([TensorSpec(tuple(t.shape), DTYPE_OF_TORCH[t.dtype]) for t in tensors], **attrs)  # same errors as tracing
        outs = opdef.reference(*tensors, **attrs)
        outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
    return outs[0] if len(outs) == 1 else outs


def shape(x) -> tuple:
    """Static shape with symbolic dims as None (Keras's convention)."""
    if isinstance(x, Value):
        return tuple(d if isinstance(d, int) else None for d in x.shape)
    return tuple(x.shape)


def dtype(x) -> str:
    if isinstance(x, Value):
        return x.dtype
    return DTYPE_OF_TORCH[_as_tensor(x).dtype]


# Arithmetic -------------------------------------------------------------------
def add(a, b):
    return emit("add", a, b)


def subtract(a, b):
    return emit("sub", a, b)


def multiply(a, b):
    return emit("mul", a, b)


def divide(a, b):
    return emit("div", a, b)


def maximum(a, b):
    return emit("maximum", a, b)


def minimum(a, b):
    return emit("minimum", a, b)


def negative(x):
    return emit("neg", x)


def cast(x, dtype):
    return emit("cast", x, dtype=dtype)


def matmul(a, b):
    return emit("matmul", a, b)


def bias_add(x, bias):
    return emit("bias_add", x, bias)


# Activations, with keras.ops's names and defaults (a custom layer's call: ops.relu(x)) ----------
def relu(x):
    return emit("relu", x, negative_slope=0.0, max_value=None, threshold=0.0)


def sigmoid(x):
    return emit("sigmoid", x)


def tanh(x):
    return emit("tanh", x)


def gelu(x, approximate=True):  # keras.ops.gelu's default is the tanh approximation
    return emit("gelu", x, approximate=approximate)


def silu(x):
    return emit("silu", x)


def softplus(x):
    return emit("softplus", x)


def elu(x, alpha=1.0):
    return emit("elu", x, alpha=alpha)


def leaky_relu(x, negative_slope=0.2):
    return emit("leaky_relu", x, negative_slope=negative_slope)


# Shapes -----------------------------------------------------------------------
def reshape(x, new_shape):
    """Reshape; one entry may be -1 (inferred from the other sizes)."""
    return emit("reshape", x, shape=resolve_reshape(tuple(x.shape), new_shape))


def transpose(x, axes):
    return emit("transpose", x, perm=tuple(axes))


def concatenate(xs, axis=-1):
    return emit("concat", *xs, axis=axis)


# Reductions -------------------------------------------------------------------
def _axes(axis):
    if axis is None:
        return None
    return tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)


def sum(x, axis=None, keepdims=False):  # noqa: A001 - Keras's name
    return emit("sum", x, axes=_axes(axis), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return emit("mean", x, axes=_axes(axis), keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001 - Keras's name
    return emit("max", x, axes=_axes(axis), keepdims=keepdims)


# Neural-network ops ------------------------------------------------------------
def conv2d(x, kernel, strides=(1, 1), padding="valid", dilation_rate=(1, 1), groups=1):
    return emit("conv2d", x, kernel, strides=tuple(strides), padding=padding, dilation=tuple(dilation_rate), groups=groups)


def max_pool2d(x, pool_size, strides, padding="valid"):
    return emit("max_pool2d", x, pool_size=tuple(pool_size), strides=tuple(strides), padding=padding)


def average_pool2d(x, pool_size, strides, padding="valid"):
    return emit("avg_pool2d", x, pool_size=tuple(pool_size), strides=tuple(strides), padding=padding)


def embedding(ids, table):
    return emit("embedding", ids, table)


def emit_random(op: str, x, seed: int, drawing: bool, *operands, **attrs):
    """Emit a random op reading x (and `operands` after it): inside a training step the builder
    carries the step number as the op's last input, so each step draws anew, and a layer called
    twice in the step gets a derived seed for its second call (two masks, as Keras's seed
    generator advances per call)."""
    counter = current_builder().rng_counter if drawing and isinstance(x, Value) else None
    if counter is not None:
        seed = current_builder().random_seed(seed)
    inputs = (x, *operands) if counter is None else (x, *operands, counter)
    return emit(op, *inputs, seed=seed, **attrs)


def dropout(x, rate, seed=0, training=False):
    return emit_random("dropout", x, seed, training, rate=float(rate), training=training)


# Math for losses and metrics ----------------------------------------------------
def log(x):
    return emit("log", x)


def abs(x):  # noqa: A001 - Keras's name
    return emit("abs", x)


def square(x):
    return emit("square", x)


def power(x, exponent):
    """x ** exponent for a constant exponent (Keras's ops.power with a number)."""
    return emit("power", x, exponent=float(exponent))


def sqrt(x):
    return emit("sqrt", x)


def clip(x, x_min, x_max):
    """Keras's clip (torch.clip on its torch backend): with number bounds on a float tensor one op
    whose gradient passes at the bounds as torch.clamp's does; else the min of a max."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x_min, x_max))
    if numbers and dtype(x) in FLOAT_DTYPES:
        return emit("clip", x, low=float(x_min), high=float(x_max))
    return minimum(maximum(x, x_min), x_max)


def one_hot(ids, num_classes, dtype="float32"):
    return emit("one_hot", ids, depth=num_classes, dtype=dtype)


def softmax(x, axis=-1):
    return emit("softmax", x, axis=axis)


def log_softmax(x, axis=-1):
    return emit("log_softmax", x, axis=axis)


# Python operators on traced values, as on Keras tensors (`inputs + self.dense(inputs)` in a
# layer's call). Value is the IR's and knows nothing of tracing, so the operators are given to it
# here, where tracing lives; each one is the op function above.
def _reflected(fn):
    return lambda a, b: fn(b, a)


OPERATORS = {
    "__add__": add, "__radd__": _reflected(add), "__sub__": subtract, "__rsub__": _reflected(subtract),
    "__mul__": multiply, "__rmul__": _reflected(multiply), "__truediv__": divide, "__rtruediv__": _reflected(divide),
    "__matmul__": matmul, "__rmatmul__": _reflected(matmul), "__neg__": negative,
}


def give_operators(cls) -> None:
    """Python's arithmetic operators on `cls` (traced values, weights) as the ops above."""
    for name, fn in OPERATORS.items():
        setattr(cls, name, fn)


give_operators(Value)
# Arithmetic with a weight, as on a Keras variable: `ops.matmul(x, self.w) + self.b` in a layer's
# call emits the op while tracing and computes it on data.
give_operators(Variable)
