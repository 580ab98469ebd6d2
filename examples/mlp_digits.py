"""Python twin of mlp_digits.k: the same models through the Keras-style API."""

from kcomp.layers import Dense, Dropout, Input
from kcomp.models import Sequential

mlp_digits = Sequential(
    [
        Input(shape=(64,)),
        Dense(64, activation="relu"),
        Dropout(0.1),
        Dense(10, activation="softmax"),
    ],
    name="mlp_digits",
)

seed_mlp = Sequential(name="seed_mlp")
seed_mlp.add(Dense(units=64, activation="relu", input_dim=100))
seed_mlp.add(Dense(units=10, activation="softmax"))
