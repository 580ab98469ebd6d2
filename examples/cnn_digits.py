"""Python twin of cnn_digits.k."""

from kcomp.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
from kcomp.models import Sequential

model = Sequential(
    [
        Input(shape=(8, 8, 1)),
        Conv2D(16, kernel_size=3, padding="same", activation="relu"),
        MaxPooling2D(2),
        Conv2D(32, kernel_size=3, padding="same", activation="relu"),
        MaxPooling2D(2),
        Flatten(),
        Dense(10, activation="softmax"),
    ],
    name="cnn_digits",
)
