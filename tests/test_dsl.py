"""The .k language: examples vs their Python twins, every construct, and error reports."""

import re
from pathlib import Path

import numpy as np
import pytest

import kcomp
from kcomp import dsl
from kcomp.errors import KcompError, SourceError
from kcomp.ir import print_graph
from kcomp.model_files import load_models

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.k"))


def fresh_session() -> None:
    """Default layer names and the same random stream (weights, dropout seeds)."""
    kcomp.backend.clear_session()
    kcomp.utils.set_random_seed(0)


def printed(models: dict) -> dict:
    return {name: print_graph(m.to_graph()) for name, m in models.items()}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_builds_the_same_ir_as_its_python_twin(path, golden):
    fresh_session()
    from_k = printed(dsl.load(path))
    fresh_session()
    from_py = printed(load_models(path.with_suffix(".py")))
    assert from_k == from_py
    for name, text in from_k.items():
        golden(f"dsl_{path.stem}_{name}", text)


def test_every_example_has_a_python_twin():
    assert EXAMPLES, "no examples found"
    for path in EXAMPLES:
        assert path.with_suffix(".py").exists(), f"{path.name} has no Python twin"


def test_documented_examples_parse():
    text = (ROOT / "grammar" / "README.md").read_text()
    blocks = [b for b in re.findall(r"```\n(.*?)```", text, re.S) if re.match(r"(model|graph) \w+ \{", b)]
    assert len(blocks) >= 3
    for block in blocks:
        assert dsl.loads(block, "README.md")


SEVERAL = """
# two models, comments everywhere
model a {   # trailing comment
  input(shape=(6,), name="features")
  dense(4, activation=relu, use_bias=false, kernel_initializer=glorot_normal(seed=3))
  dense(2, kernel_regularizer=l2(0.01), bias_regularizer=l1_l2(l1=0.1, l2=0.2))
  compile {
    optimizer = sgd(learning_rate=0.1, momentum=0.9)
    loss = "mean_squared_error"
    metrics = [mae, mse]
  }
}

graph b {
  img = input(9, 11, 3)
  ids = input(5, dtype=int32)
  c = conv2d(img, 4, kernel=(3, 3), strides=2, padding=same, dilation=1)
  p = max_pool2d(c, pool=2, padding=same)
  f = flatten(p)
  e = embedding(ids, 20, 3)
  seq, h = gru(e, 6, return_sequences=true, return_state=true)
  j = concatenate(f, h)
  n = layer_normalization(j, axis=-1, epsilon=1e-5)
  out = dense(n, 3, activation=softmax, name="scores")
  output out, seq
}
"""


def test_several_models_and_every_construct():
    models = dsl.loads(SEVERAL, "several.k")
    assert list(models) == ["a", "b"]
    a, b = models["a"], models["b"]
    assert a.inputs[0].call.layer.name == "features"
    d0, d1 = a.layers
    assert d0.use_bias is False and d0.kernel_initializer.seed == 3 and type(d0.kernel_initializer).__name__ == "GlorotNormal"
    assert d1.kernel_regularizer.l2 == 0.01 and (d1.bias_regularizer.l1, d1.bias_regularizer.l2) == (0.1, 0.2)
    assert a.compile_config.settings == {
        "optimizer": {"name": "sgd", "args": [], "kwargs": {"learning_rate": 0.1, "momentum": 0.9}},
        "loss": "mean_squared_error",
        "metrics": ["mae", "mse"],
    }
    assert b.output_shape == [(None, 3), (None, 5, 6)]
    assert b.get_layer("scores").units == 3
    conv = b.get_layer("conv2d")
    assert conv.kernel_size == (3, 3) and conv.strides == (2, 2) and conv.padding == "same"
    rng = np.random.default_rng(0)
    out, seq = b.predict([rng.normal(size=(2, 9, 11, 3)), rng.integers(0, 20, size=(2, 5))], verbose=0)
    np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)


def test_a_k_file_is_data_never_python():
    # Python-looking text is either a syntax error or plain words.
    with pytest.raises(SourceError):
        dsl.loads('model m { input(3) dense(__import__("os").system("echo hi")) }')
    with pytest.raises(SourceError, match="Received: units='__import__'"):
        dsl.loads("model m { input(3) dense(__import__) }")


def _error(text: str) -> SourceError:
    with pytest.raises(SourceError) as info:
        dsl.loads(text, "m.k")
    return info.value


def test_syntax_error_reports_file_line_column_caret_and_expected():
    err = _error("model m {\n  input(3)\n  dense(64 activation=relu)\n}\n")
    assert (err.filename, err.line, err.column) == ("m.k", 3, 12)
    lines = str(err).splitlines()
    assert lines[0].startswith("m.k:3:12: syntax error: unexpected 'activation'")
    assert lines[1] == "      dense(64 activation=relu)"
    assert lines[2] == "    " + " " * 11 + "^"
    assert "expected one of" in lines[3] and "','" in lines[3] and "')'" in lines[3]


def test_unexpected_character_and_end_of_file():
    assert "unexpected character '$'" in str(_error("model m { input(3) $ }"))
    err = _error("model m {\n  input(3)\n  dense(4")
    assert err.line == 3 and "ends in the middle" in str(err)


@pytest.mark.parametrize(
    "text, line, column, message",
    [
        ("model m {\n  input(10)\n  dens(4)\n}", 3, 3, "unknown layer 'dens'. Did you mean 'dense'?"),
        ("model m {\n  input(10)\n  dense(4, activaton=relu)\n}", 3, 12, "has no argument 'activaton'. Did you mean 'activation'?"),
        ("model m {\n  input(10)\n  dense(4, activation=rleu)\n}", 3, 3, "Did you mean 'relu'?"),
        ("model m {\n  input(10)\n  dense(0)\n}", 3, 3, "Received: units=0"),
        ("model m {\n  inptu(10)\n}", 2, 3, "Did you mean 'input'?"),
        ("graph g {\n  x = input(3)\n  y = add(x, xx)\n  output y\n}", 3, 14, "unknown value 'xx'. Did you mean 'x'?"),
        ("graph g {\n  x = input(3)\n  y = dense(x, 2)\n}", 1, 7, "has no `output` line"),
        ("graph g {\n  x = input(3)\n  output z\n}", 3, 3, "undefined value 'z'"),
        ("graph g {\n  x = input(3)\n  dense(x, 2)\n}", 3, 3, "name the result"),
        ("model m {\n  input(3)\n  y = dense(2)\n}", 3, 3, "needs a graph block"),
        ("model m {\n  input(3)\n  dropout(0.1, none, 1, 2)\n}", 3, 3, "at most 3 positional"),
        ("model m {\n  input(3)\n  dense(2, units=3)\n}", 3, 12, "given twice"),
        ("model m {\n  input(3)\n  compile { optimiser = adam }\n}", 3, 13, "Did you mean 'optimizer'?"),
        ("model m { input(3) }\nmodel m { input(3) }", 2, 7, "already defined"),
        ("# nothing here\n", 1, 1, "defines no model"),
    ],
)
def test_semantic_errors_point_at_the_line(text, line, column, message):
    err = _error(text)
    assert (err.line, err.column) == (line, column), str(err)
    assert message in str(err)
    assert "^" in str(err) or err.line == 0


def test_shape_error_names_line_layer_and_both_shapes():
    err = _error("model m {\n  input(10)\n  reshape((3, 4))\n}")
    text = str(err)
    assert err.line == 3 and "reshape" in text and "(None, 10)" in text and "(None, 3, 4)" in text


def test_merge_shape_error_in_a_graph():
    err = _error("graph g {\n  a = input(3)\n  b = input(4)\n  s = add(a, b)\n  output s\n}")
    assert err.line == 4 and '"add"' in str(err) and "(None, 3)" in str(err) and "(None, 4)" in str(err)


def test_unreadable_files_are_source_errors(tmp_path):
    bad = tmp_path / "bad.k"
    bad.write_bytes(b"model m { input(3) \xff\xfe }")
    with pytest.raises(SourceError, match="not UTF-8"):
        dsl.load(bad)
    with pytest.raises(KcompError):
        dsl.load(tmp_path / "missing.k")


@pytest.mark.parametrize(
    "line, message",
    [
        ("conv2d(16)", "missing 1 required positional argument: 'kernel_size'"),
        ("dense(activation=relu)", "missing 1 required positional argument: 'units'"),
        ("reshape(4)", "Received: target_shape=4"),
        ("dense(4, use_bias=flase)", "Received: use_bias='flase'. Expected True or False"),
        ("batch_norm(epsilon=big)", "Received: epsilon='big'"),
        ("dense(2, bias_initializer=constant(abc))", "could not convert"),
        ("dense(99999999999999999999)", "32-bit offsets"),
        ('dense(4, name="\\ud800")', "lone surrogate"),
        ("dense(4, dtype=[1])", "dtype"),
    ],
)
def test_bad_values_are_source_errors_not_crashes(line, message):
    err = _error(f"model m {{\n  input(8, 8, 1)\n  {line}\n}}")
    assert err.line == 3 and message in str(err)


def test_a_byte_order_mark_is_ignored():
    assert list(dsl.loads("\ufeffmodel m { input(3) dense(2) }")) == ["m"]
