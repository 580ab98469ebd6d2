"""Every optimizer's state goes through Keras 3's .keras archives both ways, Keras (torch backend) the oracle.

A file holds the optimizer's iteration count, learning rate and slots in Keras's order
(kcomp/saving/keras_paths.py: slot_layout); a slot in the wrong place, a missing one, or Nadam's
u_product written per weight instead of as Keras's one scalar changes the layout or the next step.
"""

import io
import re
import zipfile

import h5py
import numpy as np
import pytest

from keras_oracle import dense_model, keras, twins
from tolerances import tolerance

import kcomp  # noqa: E402

# Each optimizer with settings off its defaults where they add or move slots (amsgrad, momentum,
# centered, nesterov) or enter the formulas, and learning rates large enough that steps matter.
CASES = [
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"learning_rate": 0.01, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.2}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.9}),
    ("Adamax", {"learning_rate": 0.01, "beta_1": 0.8}),
    ("Nadam", {"learning_rate": 0.01}),
    ("Ftrl", {"learning_rate": 0.1, "initial_accumulator_value": 0.2, "l1_regularization_strength": 0.01,
              "l2_regularization_strength": 0.01}),
    ("Lion", {"learning_rate": 0.01}),
]
# float32, the same formulas rounded differently by the two libraries; each weight and slot is a
# few operations a step (the model's Dense layers read 4 and 5 features).
TOL = tolerance("float32", "elementwise")

rng = np.random.default_rng(7)
X = rng.random((8, 4), dtype=np.float32)
Y = rng.random((8, 1), dtype=np.float32)


@pytest.fixture(autouse=True)
def fresh_keras_names():
    keras.backend.clear_session()


def train(model, steps):
    for _ in range(steps):
        model.train_on_batch(X, Y)


def optimizer_layout(path):
    """The archive's optimizer/vars: index -> (shape, dtype)."""
    with zipfile.ZipFile(path) as z, h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
        group = f["optimizer/vars"]
        return {int(k): (group[k].shape, group[k].dtype.str) for k in group}


def assert_weights_close(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, **TOL)


@pytest.mark.parametrize("name, kwargs", CASES, ids=[c[0] for c in CASES])
def test_kcomp_archive_loads_in_keras_with_its_optimizer_state(tmp_path, name, kwargs):
    """kcomp trains, saves; Keras loads the same config and slots as a Keras twin trained alike has,
    and continues training to the weights kcomp reaches from its own state."""
    ours, theirs = twins(dense_model, optimizer=lambda lib: getattr(lib.optimizers, name)(**kwargs), loss="mse")
    train(ours, 3)
    train(theirs, 3)
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    assert optimizer_layout(tmp_path / "ours.keras") == optimizer_layout(tmp_path / "theirs.keras")

    loaded = keras.saving.load_model(tmp_path / "ours.keras")
    assert type(loaded.optimizer) is type(theirs.optimizer)
    assert loaded.optimizer.get_config() == pytest.approx(theirs.optimizer.get_config())  # its name included
    # a variable's path names its weight and slot (dense_kernel_momentum) after the optimizer's name;
    # Nadam's u_product is a plain "variable" (numbered _1, _2, ... by Keras's session-wide count)
    names = [[re.sub(r"^variable_\d+$", "variable", v.path.rsplit("/", 1)[-1]) for v in m.optimizer.variables]
             for m in (loaded, theirs)]
    assert names[0] == names[1]
    for a, b in zip(loaded.optimizer.variables, theirs.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=a.path, **TOL)

    train(ours, 2)
    train(loaded, 2)
    assert_weights_close(ours, loaded)


@pytest.mark.parametrize("name, kwargs", CASES, ids=[c[0] for c in CASES])
def test_keras_archive_resumes_in_kcomp_as_in_keras(tmp_path, name, kwargs):
    """Keras trains, saves; kcomp loads its optimizer and slots and continues to Keras's numbers; what
    kcomp then saves, Keras reads back as its own state."""
    theirs = dense_model(keras)
    theirs.compile(optimizer=getattr(keras.optimizers, name)(**kwargs), loss="mse")
    train(theirs, 2)
    theirs.save(tmp_path / "theirs.keras")
    ours = kcomp.models.load_model(tmp_path / "theirs.keras")
    assert type(ours.optimizer).__name__ == name and ours.optimizer.iterations == 2
    for key, value in kwargs.items():
        assert getattr(ours.optimizer, key) == pytest.approx(value)
    for _ in range(2):
        assert ours.train_on_batch(X, Y) == pytest.approx(float(theirs.train_on_batch(X, Y)), rel=TOL["rtol"])
    assert_weights_close(ours, theirs)

    ours.save(tmp_path / "ours.keras")
    back = keras.saving.load_model(tmp_path / "ours.keras")
    for a, b in zip(back.optimizer.variables, theirs.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), err_msg=a.path, **TOL)
