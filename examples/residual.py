"""Python twin of residual.k (the functional API)."""

from kcomp.layers import Add, Conv2D, Dense, GlobalAveragePooling2D, Input, MaxPooling2D, ReLU
from kcomp.models import Model


def build_model():
    x = Input(shape=(16, 16, 8))
    c1 = Conv2D(8, kernel_size=3, padding="same", activation="relu")(x)
    c2 = Conv2D(8, kernel_size=3, padding="same")(c1)
    s = Add()([x, c2])
    r = ReLU()(s)
    p = MaxPooling2D(2)(r)
    features = GlobalAveragePooling2D()(p)
    scores = Dense(10, activation="softmax")(features)
    return Model(x, [scores, features], name="residual")
