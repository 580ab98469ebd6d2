"""Building a model takes time linear in its layers (issue 11): adding a layer to a connected
Sequential connects that one layer, not the whole stack again. Checked by counting whole-graph
walks, not by timing (bench/bench_model_size.py has the curve)."""

import numpy as np
import pytest

import kcomp
from kcomp.errors import KcompError
from kcomp.models import functional


def test_adding_layers_one_by_one_walks_the_graph_once(monkeypatch):
    walks = []
    real = functional.walk
    monkeypatch.setattr(functional, "walk", lambda outputs: walks.append(1) or real(outputs))
    model = kcomp.Sequential([kcomp.Input((4,))])
    for _ in range(60):
        model.add(kcomp.layers.Dense(3))
    assert len(walks) <= 2, f"{len(walks)} whole-graph walks for 60 adds"
    # The model is the same as one connected in one go: same layers, weights and outputs.
    twin = kcomp.Sequential([kcomp.Input((4,)), *[kcomp.layers.Dense(3) for _ in range(60)]])
    assert [type(l).__name__ for l in model.layers] == [type(l).__name__ for l in twin.layers]
    twin.set_weights(model.get_weights())
    x = np.random.default_rng(0).random((5, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), twin.predict(x, verbose=0), rtol=1e-6)
    assert len(model._call_order) == 61 and model.count_params() == twin.count_params()


def test_appending_keeps_the_checks_of_a_full_rebuild():
    model = kcomp.Sequential([kcomp.Input((4,)), kcomp.layers.Dense(3, name="a")])
    with pytest.raises(KcompError, match="unique names"):
        model.add(kcomp.layers.Dense(3, name="a"))
    with pytest.raises(KcompError):
        model.add(kcomp.layers.Reshape((5,)))  # 3 values do not reshape to 5: refused as it is added
    assert [l.name for l in model.layers] == ["a"]
    model.add(kcomp.layers.Dense(2, name="b"))
    model.pop()
    model.add(kcomp.layers.Dense(2, name="b"))  # the popped name is free again
    assert model.output_shape == (None, 2)
