"""examples/cifar_augment.k and its Python twin (issue 15 part 6): the same model, Keras's model
with the import changed, where `kcomp build --train --explain` puts each augmentation op, and
the example's training run on the reference executor and on the kernels under the interpreter."""

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

import kcomp
from kcomp import dsl
from kcomp.model_files import load_models

ROOT = Path(__file__).resolve().parent.parent
K_FILE, PY_FILE = ROOT / "examples" / "cifar_augment.k", ROOT / "examples" / "cifar_augment.py"
AUGMENTATION = ("random_flip", "random_rotation", "random_zoom")


def example(run_name="__test__") -> dict:
    """The .py twin's namespace (its main() not run)."""
    return runpy.run_path(str(PY_FILE), run_name=run_name)


def layer_configs(model) -> list:
    # Names are per session (conv2d vs conv2d_3); everything else must agree.
    return [(type(layer).__name__, {k: v for k, v in layer.get_config().items() if k != "name"})
            for layer in model.layers]


def test_k_and_py_define_the_same_model_and_compile_settings():
    from_k = dsl.load(K_FILE)["cifar_augment"]
    from_py = load_models(PY_FILE)["cifar_augment"]
    assert layer_configs(from_k) == layer_configs(from_py)
    assert from_k.count_params() == from_py.count_params() == 40874
    assert [w.shape for w in from_k.weights] == [w.shape for w in from_py.weights]
    assert from_k.compile_config.settings == example()["COMPILE"]
    assert [type(layer).__name__ for layer in from_k.layers[1:5]] == ["RandomFlip", "RandomRotation", "RandomZoom",
                                                                      "RandomContrast"]


def test_the_python_twin_is_keras_code_with_the_import_changed():
    """The model part run with `keras.` imports: the same parameters, and with the same weights the
    same predictions (augmentation passes images through unchanged outside training)."""
    keras = pytest.importorskip("keras")
    source = PY_FILE.read_text().replace("from kcomp.layers", "from keras.layers").replace("from kcomp.models", "from keras.models")
    namespace = {"__name__": "__keras__"}
    exec(compile(source, str(PY_FILE), "exec"), namespace)
    theirs = namespace["build_model"]()
    assert isinstance(theirs, keras.Model)
    ours = example()["build_model"](backend="reference")
    assert theirs.count_params() == ours.count_params()
    theirs.set_weights(ours.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(ours.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_build_train_explain_says_where_each_augmentation_op_went(tmp_path):
    from kernel_helpers import explain_training_build

    lines = explain_training_build(tmp_path, "cifar_augment.k")
    where = re.compile(r" -> (kernel \d+ \[\w+\]|unfused torch op \(.*\)|a view, no kernel)$")
    for layer in AUGMENTATION:
        own = [line for line in lines if line.startswith((f"{layer} ", f"{layer}/"))]
        # The image resampling of each layer is an affine_transform kernel; every op of the layer is placed.
        assert any(re.fullmatch(rf"{layer} \((augment_params \+ )?affine_transform\) -> kernel \d+ \[affine_transform\]", line)
                   for line in own), own
        assert all(where.search(line) for line in own), own
        assert not any(f"{layer}/grad" in line for line in lines)  # nothing upstream to differentiate
    assert any(re.match(r"rescaling \(mul.*\) -> kernel \d+ \[\w+\]", line) for line in lines), lines[:8]
    # RandomContrast: its two means, then its draw, arithmetic and clip in one pointwise kernel; no torch op.
    contrast = [line for line in lines if line.startswith("random_contrast ")]
    assert any(re.fullmatch(r"random_contrast \(random_contrast \+ clip\) -> kernel \d+ \[pointwise\]",
                            line) for line in contrast), contrast
    assert all(where.search(line) and "torch op" not in line for line in contrast), contrast


def stand_in_batch(n=4):
    (x, y), _ = example()["stand_in"](n_train=n, n_test=1)
    return x.astype("float32"), y


@pytest.mark.slow
def test_a_training_step_of_the_example_on_the_kernels_matches_the_reference():
    """One Adam step of the example's model (augmentation, separable conv, dropout included) on
    the reference executor and on the generated kernels under the interpreter: equal loss,
    accuracy and weights (the augmentation's draws are the same on both)."""
    from kernel_helpers import assert_compiled_steps_match_the_reference

    build_model = example()["build_model"]

    def make():
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(7)
        return build_model(backend="reference")

    x, y = stand_in_batch(3)
    assert_compiled_steps_match_the_reference(make, x, y, steps=1, loss="sparse_categorical_crossentropy")


def test_main_trains_on_the_stand_in_with_validation_and_prints_accuracy(capsys):
    loss, accuracy = example()["main"](["--stand-in", "--backend", "reference", "--epochs", "1", "--samples", "8",
                                        "--batch-size", "4"])
    out = capsys.readouterr().out
    assert "val_accuracy" in out and f"test accuracy {accuracy:.4f} (8 images)" in out
    assert np.isfinite(loss) and 0 <= accuracy <= 1


def test_missing_cifar_falls_back_to_the_stand_in_and_says_so(monkeypatch, capsys):
    from kcomp.datasets import cifar10
    from kcomp.errors import KcompError

    def missing(path=None):
        raise KcompError("cifar10 data is not on this machine, and kcomp does not download data sets: looked in ...")

    monkeypatch.setattr(cifar10, "load_data", missing)
    (x_train, y_train), (x_test, y_test) = example()["load_data"]()
    assert "training on a generated stand-in instead" in capsys.readouterr().out
    assert x_train.shape[1:] == (32, 32, 3) and x_train.dtype == np.uint8 and y_train.shape == (len(x_train), 1)
    assert set(np.unique(y_train)) <= set(range(10)) and len(np.unique(y_train)) == 10
    assert x_test.shape[1:] == (32, 32, 3)
