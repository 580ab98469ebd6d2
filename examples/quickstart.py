"""The seed document's first model, ported from Keras by changing the import prefix.

Builds it, prints Keras's summary and kcomp's IR, and predicts on random data.
Run: .venv/bin/python examples/quickstart.py
"""

import numpy as np

from kcomp.ir import print_graph
from kcomp.layers import Dense
from kcomp.models import Sequential

model = Sequential()
model.add(Dense(units=64, activation="relu", input_dim=100))
model.add(Dense(units=10, activation="softmax"))
model.summary()

print("\nIR graph:")
print(print_graph(model.to_graph()))

x = np.random.default_rng(0).random((100, 100), dtype=np.float32)
predictions = model.predict(x, batch_size=32)
print(f"predictions: shape {predictions.shape}, each row sums to 1: {np.allclose(predictions.sum(axis=1), 1, atol=1e-5)}")
print("class of the first 10 samples:", predictions[:10].argmax(axis=1))
