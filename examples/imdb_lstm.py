"""Python twin of imdb_lstm.k: the seed's code with `keras` replaced by `kcomp`."""

from kcomp.layers import LSTM, Dense, Embedding
from kcomp.models import Sequential

max_features = 10000
max_len = 500

model = Sequential(name="imdb_lstm")
model.add(Embedding(max_features, 32, input_length=max_len))
model.add(LSTM(32))
model.add(Dense(1, activation="sigmoid"))
