"""The imports a Keras user types work with the prefix changed to kcomp."""

import subprocess
import sys


def test_keras_style_imports():
    from kcomp.layers import LSTM, Conv2D, Dense, Embedding, MaxPooling2D  # noqa: F401
    from kcomp.models import Model, Sequential  # noqa: F401
    from kcomp.preprocessing import sequence

    import kcomp

    assert kcomp.Sequential is Sequential and kcomp.Model is Model
    assert kcomp.layers.Dense is Dense
    assert callable(kcomp.Input) and callable(sequence.pad_sequences)
    assert callable(kcomp.utils.to_categorical)


def test_every_layer_the_foundation_names_exists():
    import kcomp.layers as L

    names = """Input InputLayer Dense Activation ReLU Softmax LeakyReLU Dropout Flatten Reshape Permute Conv2D
    MaxPooling2D AveragePooling2D GlobalAveragePooling2D GlobalMaxPooling2D BatchNormalization LayerNormalization
    Embedding LSTM GRU SimpleRNN Add Subtract Multiply Concatenate Average Maximum""".split()
    missing = [n for n in names if not hasattr(L, n)]
    assert not missing


def _run(*args):
    return subprocess.run([sys.executable, "-m", "kcomp", *args], capture_output=True, text=True, timeout=120)


def test_cli_version_and_help():
    import kcomp

    version = _run("--version")
    assert version.returncode == 0 and kcomp.__version__ in version.stdout
    help_ = _run("--help")
    assert help_.returncode == 0 and "usage: kcomp" in help_.stdout
    bad = _run("--no-such-flag")
    assert bad.returncode == 2


INTERPRETER_LATER = """
import sys
import numpy as np
from kcomp.layers import Dense, Input
from kcomp.models import Sequential

x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
y = np.random.default_rng(1).normal(size=(16, 3)).astype("float32")
a = Sequential([Input(shape=(5,)), Dense(3, activation="relu")])
a.compile(optimizer="adam", loss="mse", backend="reference")
a.fit(x, y, epochs=1, batch_size=8, verbose=0)
assert "triton" not in sys.modules, "a reference fit imported Triton"
b = Sequential([Input(shape=(5,)), Dense(3, activation="relu")])
b.compile(optimizer="adam", loss="mse", backend="triton-interpret")
b.set_weights(a.get_weights())
assert np.allclose(b.predict(x, verbose=0), a.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
print("ok")
"""


def test_a_reference_fit_leaves_the_interpreter_open():
    """The interpreter must be chosen before Triton is imported, so nothing on the reference
    path may import it (the fusion pass reads the template records only when it fuses)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", INTERPRETER_LATER], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
