"""The one layer test harness, in the spirit of Keras's `run_layer_test`.

`run_layer_test` takes a layer class, its arguments, an input shape and what
Keras would report for that layer, and checks a fresh layer six ways:

  (a) config: from_config(get_config()) gives the same config, also through JSON;
  (b) symbolic call on kcomp.Input gives KerasTensors of the expected shapes;
  (c) weights: count, trainable / non-trainable split, names and shapes in
      Keras's order and layout, and count_params as Keras reports it;
  (d) model.predict on fresh random inputs (a ragged batch, never zeros) equals
      `reference_fn(x, weights)`, an independent numpy / torch computation in
      float64 written by the test from the layer's weights;
  (e) get_weights / set_weights round-trip: random new weights change the
      prediction to what the reference says; a wrong shape or count raises a
      KcompError that names the weight;
  (f) eager call of a fresh layer of the same config on a numpy array gives a
      torch tensor of the expected shape and the reference's values.

`reference_fn(x, weights)` gets `x` as float64 numpy (a list of arrays for a
layer that takes a list) and `weights` as {weight name: float64 array}; it
returns an array, or a list of arrays for a layer with several outputs.
"""

import json

import numpy as np
import pytest
import torch

import kcomp
from kcomp.errors import KcompError
from kcomp.layers.tensors import KerasTensor

def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _is_multi_input(input_shape) -> bool:
    """A list of shapes (merge layers) rather than one shape."""
    return isinstance(input_shape, list) and all(isinstance(s, (list, tuple)) for s in input_shape)


def default_inputs(rng, shape, dtype):
    """Standard normal floats (never zeros); for integer inputs, ids in [1, 10)."""
    if dtype.startswith("int"):
        return rng.integers(1, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def default_weights(rng, name, shape):
    """Random non-trivial values for one weight: variances positive, the rest normal(0, 0.5)."""
    if "variance" in name:
        return rng.uniform(0.5, 2.0, size=shape).astype("float32")
    return (0.5 * rng.standard_normal(shape)).astype("float32")


def _config_json(config) -> str:
    return json.dumps(config, sort_keys=True)


def check_config_round_trip(layer_cls, layer):
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert type(clone) is layer_cls
    assert clone.get_config() == config, f"config changed in a round trip:\n{clone.get_config()}\n!=\n{config}"
    # A saved model keeps the config as JSON (tuples become lists): it must survive that too.
    text = _config_json(config)
    from_json = layer_cls.from_config(json.loads(text))
    assert _config_json(from_json.get_config()) == text


def _made_by(layer, owner) -> bool:
    """Whether `owner` is the layer or one it holds, however deep."""
    return owner is layer or any(_made_by(held, owner) for held in layer._held_layers())


def check_weights(layer, expected_num_weights, expected_num_trainable, expected_weight_shapes,
                  expected_non_trainable_names, expected_num_params):
    weights = layer.weights
    assert len(weights) == expected_num_weights, [w.name for w in weights]
    assert len(layer.trainable_weights) == expected_num_trainable
    assert len(layer.non_trainable_weights) == expected_num_weights - expected_num_trainable
    if expected_weight_shapes is not None:
        got = [(w.name, w.shape) for w in weights]
        assert got == [(k, tuple(v)) for k, v in expected_weight_shapes.items()]
    if expected_non_trainable_names is not None:
        assert [w.name for w in layer.non_trainable_weights] == list(expected_non_trainable_names)
    for w in weights:
        # float32, or an int32 counter as Keras keeps one (Normalization's count), never trained
        assert w.dtype == "float32" or (w.dtype == "int32" and not w.trainable), w
        assert w.path == f"{w.owner.name}/{w.name}"  # a wrapper's weights are its layer's (TimeDistributed)
        assert _made_by(layer, w.owner), w.path
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params
    assert layer.count_params() == sum(int(np.prod(w.shape)) for w in weights)


def _reference(reference_fn, x, layer):
    xs = [np.asarray(a, dtype="float64") for a in _as_list(x)]
    weights = {w.name: w.numpy().astype("float64") for w in layer.weights}
    return _as_list(reference_fn(xs if isinstance(x, list) else xs[0], weights))


def _assert_close(got, want, rtol, atol, what):
    got, want = _as_list(got), _as_list(want)
    assert len(got) == len(want), f"{what}: {len(got)} outputs, reference has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
        assert g.shape == w.shape, f"{what} output {i}: shape {g.shape}, reference {w.shape}"
        assert np.isfinite(g).all(), f"{what} output {i} is not finite"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"{what} output {i}")


def check_set_weights_errors(layer):
    weights = layer.get_weights()
    # One weight too many.
    with pytest.raises(KcompError) as err:
        layer.set_weights([*weights, np.ones((2,), "float32")])
    for w in layer.weights:
        assert w.name in str(err.value), f"count error should name the weights: {err.value}"
    if not weights:
        return
    # One weight too few.
    with pytest.raises(KcompError):
        layer.set_weights(weights[:-1])
    # Each weight, in turn, with one extra row.
    for i, w in enumerate(layer.weights):
        bad = list(weights)
        bad[i] = np.ones((*w.shape[:-1], w.shape[-1] + 1) if w.shape else (2,), "float32")  # a scalar: a vector
        with pytest.raises(KcompError) as err:
            layer.set_weights(bad)
        assert w.name in str(err.value), f"shape error should name weight {w.name}: {err.value}"
    # A failed set_weights leaves the weights as they were.
    for before, after in zip(weights, layer.get_weights()):
        np.testing.assert_array_equal(before, after)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_weights,
    expected_num_trainable,
    reference_fn,
    input_dtype="float32",
    *,
    expected_weight_shapes=None,
    expected_non_trainable_names=None,
    expected_num_params=None,
    input_fn=None,
    weight_fn=None,
    rtol=1e-5,
    atol=1e-5,
    seed=0,
):
    """Check one layer configuration; see the module docstring.

    input_shape: the data's shape with the batch first, e.g. (5, 7), or a list of
        such shapes for a layer that takes a list of tensors.
    expected_output_shape: Keras's output shape, None for the batch, or a list of
        them for a layer with several outputs (return_state).
    expected_weight_shapes: {weight name: shape} in Keras's order.
    expected_num_params: what Keras's count_params reports for this layer.
    input_fn(rng, shape, dtype) / weight_fn(rng, name, shape): override the
        random inputs and weights (e.g. ids below input_dim, positive variances).
    """
    rng = np.random.default_rng(seed)
    input_fn = input_fn or default_inputs
    weight_fn = weight_fn or default_weights
    multi = _is_multi_input(input_shape)
    shapes = [tuple(s) for s in input_shape] if multi else [tuple(input_shape)]
    expected_shapes = [tuple(s) for s in _as_list(expected_output_shape)] if isinstance(
        expected_output_shape, list
    ) else [tuple(expected_output_shape)]

    def make_x():
        xs = [input_fn(rng, s, input_dtype) for s in shapes]
        for a in xs:
            assert np.count_nonzero(a) > a.size // 2, "test inputs must not be (mostly) zeros"
        return xs if multi else xs[0]

    # (a) config round trip, before and after building.
    layer = layer_cls(**init_kwargs)
    check_config_round_trip(layer_cls, layer)

    # (b) symbolic call.
    inputs = [kcomp.Input(shape=s[1:], dtype=input_dtype) for s in shapes]
    outputs = layer(inputs if multi else inputs[0])
    assert layer.built
    flat_out = _as_list(outputs)
    assert all(isinstance(t, KerasTensor) for t in flat_out)
    assert [t.shape for t in flat_out] == expected_shapes
    assert all(t.dtype == "float32" for t in flat_out), [t.dtype for t in flat_out]
    check_config_round_trip(layer_cls, layer)

    # (c) weights.
    check_weights(layer, expected_num_weights, expected_num_trainable, expected_weight_shapes,
                  expected_non_trainable_names, expected_num_params)
    model = kcomp.Model(inputs if multi else inputs[0], outputs)
    assert model.count_params() == layer.count_params()
    assert len(model.trainable_weights) == expected_num_trainable
    assert model.output_shape == (expected_shapes if isinstance(outputs, list) else expected_shapes[0])

    # (d) predict with the initial weights, in one batch and in ragged batches.
    x = make_x()
    want = _reference(reference_fn, x, layer)
    first = model.predict(x, verbose=0)
    _assert_close(first, want, rtol, atol, "predict (initial weights)")
    _assert_close(model.predict(x, batch_size=3, verbose=0), want, rtol, atol, "predict (batch_size=3)")

    # (e) set_weights / get_weights round trip, then predict with the new weights.
    if layer.weights:
        new = [weight_fn(rng, w.name, w.shape) for w in layer.weights]
        layer.set_weights(new)
        for got, sent in zip(layer.get_weights(), new):
            np.testing.assert_array_equal(got, sent)
        second = model.predict(x, verbose=0)
        want = _reference(reference_fn, x, layer)
        _assert_close(second, want, rtol, atol, "predict (weights from set_weights)")
        assert any(
            not np.allclose(a, b) for a, b in zip(_as_list(first), _as_list(second))
        ), "set_weights did not change the prediction"
        model.set_weights(model.get_weights())  # the model-level path takes them back unchanged
        for got, sent in zip(layer.get_weights(), new):
            np.testing.assert_array_equal(got, sent)
    check_set_weights_errors(layer)

    # (f) eager call of a fresh layer with the same config.
    eager_layer = layer_cls(**{**layer.get_config(), "name": f"{layer.name}_eager"})
    x = make_x()
    out = eager_layer(x)
    flat_eager = _as_list(out)
    assert all(isinstance(t, torch.Tensor) for t in flat_eager), [type(t) for t in flat_eager]
    assert [tuple(t.shape) for t in flat_eager] == [(shapes[0][0], *s[1:]) for s in expected_shapes]
    assert len(eager_layer.weights) == expected_num_weights
    _assert_close(out, _reference(reference_fn, x, eager_layer), rtol, atol, "eager call")
    return layer
