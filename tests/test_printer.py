"""Golden tests of the IR text printer, and the verifier on good and broken graphs."""

import dataclasses

import pytest

from kcomp.errors import GraphError
from kcomp.ir import GraphBuilder, print_graph, verify
from kcomp.layers import (
    GRU, LSTM, Activation, Add, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Embedding, Flatten,
    GlobalMaxPooling2D, Input, LayerNormalization, MaxPooling2D,
)
from kcomp.models import Model, Sequential


def seed_mlp():
    return Sequential([Dense(64, activation="relu", input_dim=100), Dense(10, activation="softmax")])


def seed_sentiment():
    return Sequential([Embedding(10000, 32, input_length=500), LSTM(32), Dense(1, activation="sigmoid")])


def small_cnn():
    return Sequential(
        [
            Input(shape=(28, 28, 1)),
            Conv2D(8, 3, padding="same", activation="relu"),
            BatchNormalization(),
            MaxPooling2D(),
            Conv2D(16, 3, strides=2, activation="gelu"),
            AveragePooling2D(pool_size=3, strides=1, padding="same"),
            Flatten(),
            Dropout(0.25),
            Dense(10, activation="log_softmax"),
        ]
    )


def residual_block():
    x = Input(shape=(9, 11, 4), name="image")
    y = Conv2D(4, 3, padding="same", activation="relu")(x)
    y = Conv2D(4, 3, padding="same")(y)
    y = Activation("relu")(Add()([x, y]))
    return Model(x, GlobalMaxPooling2D()(y), name="residual")


def recurrent_states():
    tokens = Input(shape=(None,), dtype="int32", name="tokens")
    seq = Embedding(20, 6)(tokens)
    out, h = GRU(5, return_sequences=True, return_state=True)(seq)
    last = LayerNormalization()(LSTM(3)(out))
    return Model(tokens, [last, h], name="states")


MODELS = {
    "seed_mlp": seed_mlp,
    "seed_sentiment": seed_sentiment,
    "small_cnn": small_cnn,
    "residual_block": residual_block,
    "recurrent_states": recurrent_states,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_printed_ir_matches_golden(name, golden):
    graph = MODELS[name]().to_graph()
    golden(f"ir_{name}", print_graph(graph))


def test_printer_is_stable_under_renumbering():
    a = print_graph(seed_mlp().to_graph())
    # The same model built after other graphs (other value ids, other ?symbols) prints the same.
    residual_block().to_graph()
    recurrent_states().to_graph()
    from kcomp.backend import clear_session

    clear_session()
    assert print_graph(seed_mlp().to_graph()) == a


def _mlp_graph():
    b = GraphBuilder("g")
    x = b.input((None, 3), "float32", "x")
    w = b.param("w", (3, 2), "float32", "w")
    y = b.emit1("relu", [b.emit1("matmul", [x, w])])
    return b.finish([y])


def test_verifier_accepts_builder_graphs():
    verify(_mlp_graph())


def test_verifier_rejects_use_before_definition():
    g = _mlp_graph()
    with pytest.raises(GraphError, match="used before"):
        verify(dataclasses.replace(g, nodes=tuple(reversed(g.nodes))))


def test_verifier_rejects_a_wrong_output_type():
    g = _mlp_graph()
    node = g.nodes[0]
    bad_out = dataclasses.replace(node.outputs[0], shape=("N", 5))
    bad = dataclasses.replace(node, outputs=(bad_out,))
    with pytest.raises(GraphError, match="disagree with the shape rule"):
        verify(dataclasses.replace(g, nodes=(bad, *g.nodes[1:])))


def test_verifier_rejects_unknown_ops_and_incomplete_attrs():
    g = _mlp_graph()
    with pytest.raises(GraphError, match="unknown op"):
        verify(dataclasses.replace(g, nodes=(dataclasses.replace(g.nodes[0], op="frobnicate"), *g.nodes[1:])))
    relu = g.nodes[1]
    with pytest.raises(GraphError, match="not complete"):
        verify(dataclasses.replace(g, nodes=(g.nodes[0], dataclasses.replace(relu, attr_items=()))))


def test_verifier_rejects_undefined_outputs():
    g = _mlp_graph()
    with pytest.raises(GraphError, match="not defined"):
        verify(dataclasses.replace(g, nodes=g.nodes[:1]))
