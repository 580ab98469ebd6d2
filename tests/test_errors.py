"""User mistakes give a KcompError that names the value and the fix, at build time."""

import numpy as np
import pytest

from kcomp.errors import ArgumentError, KcompError, ShapeError
from kcomp.layers import (
    LSTM, Add, Concatenate, Conv2D, Dense, Dropout, Embedding, Input, MaxPooling2D, Reshape,
)
from kcomp.models import Model, Sequential


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Dense(0), "Received: units=0"),
        (lambda: Dense(-3), "Received: units=-3"),
        (lambda: Dense(2.5), "Received: units=2.5"),
        (lambda: Conv2D(8, 3, padding="full"), "Received: padding='full'"),
        (lambda: Conv2D(8, (3, 0)), "Received: kernel_size=(3, 0)"),
        (lambda: Conv2D(8, 3, data_format="channels_first"), "channels-last"),
        (lambda: MaxPooling2D(pool_size=0), "Received: pool_size=0"),
        (lambda: Dropout(1.5), "Received: rate=1.5"),
        (lambda: Dense(3, activation="rleu"), "Did you mean 'relu'"),
        (lambda: Dense(3, kernel_initializer="glorot_uniformm"), "Did you mean 'glorot_uniform'"),
        (lambda: Dense(3, unitz=4), "unexpected keyword argument"),
        (lambda: LSTM(4, stateful=True), "stateful=True"),
        (lambda: Embedding(0, 4), "Received: input_dim=0"),
        (lambda: Reshape((2, -1, -1)), "target_shape"),
    ],
)
def test_invalid_arguments_say_received(make, message):
    with pytest.raises(ArgumentError) as info:
        make()
    assert message in str(info.value)
    assert isinstance(info.value, KcompError)


def test_incompatible_shapes_name_the_layer_and_both_shapes():
    a, b = Input(shape=(3,)), Input(shape=(4,))
    with pytest.raises(ShapeError) as info:
        Add(name="merge")([a, b])
    text = str(info.value)
    assert '"merge"' in text and "(None, 3)" in text and "(None, 4)" in text


def test_reused_dense_on_other_width_is_caught_when_the_model_is_built():
    dense = Dense(5, name="d")
    dense(Input(shape=(3,)))
    with pytest.raises(ShapeError) as info:
        dense(Input(shape=(7,)))
    text = str(info.value)
    assert '"d"' in text and "(None, 7)" in text and "(3, 5)" in text


def test_sequential_add_checks_shapes_immediately():
    model = Sequential([Input(shape=(10,))])
    with pytest.raises(ShapeError) as info:
        model.add(Conv2D(4, 3, name="conv"))
    assert '"conv"' in str(info.value) and "(None, 10)" in str(info.value)
    assert model.layers == []  # the failed layer was not kept


def test_pool_window_larger_than_image():
    with pytest.raises(ShapeError, match="does not fit the 3x3 input"):
        MaxPooling2D(pool_size=4)(Input(shape=(3, 3, 2)))


def test_concatenate_mismatch_names_shapes():
    with pytest.raises(ShapeError) as info:
        Concatenate(axis=-1)([Input(shape=(4, 2)), Input(shape=(5, 2))])
    assert "(None, 4, 2)" in str(info.value) and "(None, 5, 2)" in str(info.value)


def test_predict_on_wrong_shape_names_expected_and_received():
    model = Sequential([Dense(4, input_dim=100)])
    with pytest.raises(ShapeError) as info:
        model.predict(np.ones((32, 99), "float32"))
    assert "(None, 100)" in str(info.value) and "(32, 99)" in str(info.value)


def test_predict_on_wrong_number_of_inputs():
    a, b = Input(shape=(2,)), Input(shape=(2,))
    model = Model([a, b], Add()([a, b]))
    with pytest.raises(ArgumentError, match="2 inputs"):
        model.predict([np.ones((3, 2))] * 3)


def test_model_outputs_needing_an_unlisted_input():
    a, b = Input(shape=(2,)), Input(shape=(2,), name="forgotten")
    with pytest.raises(KcompError, match="forgotten"):
        Model(a, Add()([a, b]))


def test_duplicate_layer_names_rejected():
    x = Input(shape=(2,))
    with pytest.raises(ArgumentError, match="unique"):
        Model(x, Dense(2, name="same")(Dense(2, name="same")(x)))


def test_embedding_ids_out_of_range():
    model = Sequential([Embedding(10, 3, input_length=4)])
    with pytest.raises(ShapeError, match=r"\[0, 10\)"):
        model.predict(np.array([[1, 2, 3, 12]]), verbose=0)


def test_unknown_op_suggests_a_name():
    from kcomp.ir.registry import get_op

    with pytest.raises(ArgumentError, match="Did you mean 'matmul'"):
        get_op("matmull")
