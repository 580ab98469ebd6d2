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
