"""Keras 3 (torch backend) as the oracle: build one model in both libraries, same weights.

tests/conftest.py sets KERAS_BACKEND=torch before anything imports Keras. A builder is a
function of the library module (`kcomp` or `keras`), written once with the API both share, so a
side-by-side test cannot build two different models by accident.
"""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import kcomp  # noqa: E402


def twins(build, **compile_kwargs):
    """(kcomp model, Keras model) from `build(lib)`, Keras holding kcomp's initial weights; both
    compiled with `compile_kwargs` when given (kcomp on the reference backend unless told)."""
    keras.backend.clear_session()  # Keras's automatic names (auc, auc_1, ...) count from the start, as kcomp's do
    ours, theirs = build(kcomp), build(keras)
    theirs.set_weights(ours.get_weights())
    if compile_kwargs:
        backend = compile_kwargs.pop("backend", "reference")
        ours.compile(**_fresh(compile_kwargs, kcomp), backend=backend)
        theirs.compile(**_fresh(compile_kwargs, keras))
    return ours, theirs


def _fresh(kwargs, lib):
    """Objects in compile arguments given as factories of the library (lambda lib: lib.metrics.AUC())."""
    return {k: (v(lib) if callable(v) and getattr(v, "__name__", "") == "<lambda>" else v) for k, v in kwargs.items()}


def dense_model(lib, units=1, activation="sigmoid", features=4):
    inp = lib.Input((features,))
    hidden = lib.layers.Dense(5, activation="tanh")(inp)
    return lib.Model(inp, lib.layers.Dense(units, activation=activation)(hidden))


def assert_logs_close(ours: dict, theirs: dict, rtol=1e-5, atol=1e-6):
    assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=rtol, atol=atol, err_msg=key)
