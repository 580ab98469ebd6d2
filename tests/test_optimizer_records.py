"""Every optimizer algorithm (one record each, kcomp/ir/optim/) against Keras 3's own optimizer.

kcomp's reference update runs several steps on fresh random float64 inputs next
to keras.optimizers.<X> applying the same gradients to keras.Variables of
float64: parameters and slots agree after every step. The Triton update of each
record is checked against this reference in tests/test_kernels_optimizer.py;
here a short fit with each new optimizer's string name compiles its kernel
(under the interpreter) and ends on the reference executor's weights.
"""

import inspect
import math
import zlib

import numpy as np
import pytest
import kcomp
from kcomp import optimizers
from kcomp.errors import KcompError
from kcomp.ir.optim import ALGORITHMS

from test_optimizers import run_steps

keras = pytest.importorskip("keras")

NEW = ("adadelta", "adamax", "nadam", "ftrl", "lion")
# Default and non-default hyper-parameters of every algorithm (Keras's constructor arguments).
CASES = [
    ("sgd", {}), ("sgd", {"momentum": 0.7}), ("sgd", {"momentum": 0.9, "nesterov": True}),
    ("adam", {}), ("adam", {"beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-3, "amsgrad": True}),
    ("adamw", {}), ("adamw", {"weight_decay": 0.1, "beta_2": 0.9, "amsgrad": True}),
    ("rmsprop", {}), ("rmsprop", {"rho": 0.8, "momentum": 0.5, "epsilon": 1e-3, "centered": True}),
    ("adagrad", {}), ("adagrad", {"initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("adadelta", {}), ("adadelta", {"rho": 0.7, "epsilon": 1e-3}),
    ("adamax", {}), ("adamax", {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3}),
    ("nadam", {}), ("nadam", {"beta_1": 0.8, "beta_2": 0.9, "epsilon": 1e-3}),
    ("ftrl", {}),
    ("ftrl", {"learning_rate_power": -0.7, "initial_accumulator_value": 0.3, "l1_regularization_strength": 0.05,
              "l2_regularization_strength": 0.1, "l2_shrinkage_regularization_strength": 0.02, "beta": 0.5}),
    ("ftrl", {"learning_rate_power": 0.0, "l1_regularization_strength": 0.01}),
    ("lion", {}), ("lion", {"beta_1": 0.5, "beta_2": 0.9}),
]
SHAPES = [(3, 5), (7,)]
STEPS = 4
LR = 0.0625  # exact in float32: Keras keeps the learning rate in a float32 variable
# (rtol, atol) where Keras rounds through float32 even for float64 variables; else float64's (1e-11, 1e-13).
# AdamW: its weight decay (measured: 1 - p after a step with g = 0 is 0.00625002384 for p = 1,
# weight_decay 0.1, lr 0.0625). Ftrl: the exponent and the L1 bounds (exact for the defaults -0.5, 0);
# its linear slot adds terms that nearly cancel, so the float32 rounding shows: over 40 seeds of
# these cases the worst relative difference (beyond atol) was 3.3e-6.
TOLERANCE = {"adamw": (1e-6, 5e-8), "ftrl": (1e-5, 1e-8)}


def test_every_algorithm_is_checked_here():
    assert {name for name, _ in CASES} == set(ALGORITHMS)


@pytest.mark.parametrize("name, hyper", CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_steps_equal_keras_optimizer(name, hyper):
    rng = np.random.default_rng(zlib.crc32(f"{name}{sorted(hyper.items())}".encode()))  # the same in every process
    params = [rng.normal(size=s) for s in SHAPES]
    cls = type(optimizers.get(name))
    ours = cls(learning_rate=LR, **hyper)
    theirs = getattr(keras.optimizers, cls.__name__)(learning_rate=LR, **hyper)
    variables = [keras.Variable(p, dtype="float64", name=f"w{i}") for i, p in enumerate(params)]
    rtol, atol = TOLERANCE.get(name, (1e-11, 1e-13))
    current = params
    for _ in range(STEPS):
        grads = [rng.normal(size=s) for s in SHAPES]
        theirs.apply_gradients([(keras.ops.convert_to_tensor(g, dtype="float64"), v) for g, v in zip(grads, variables)])
        current, slots = run_steps(ours, current, [grads], LR)
        for got, v in zip(current, variables):
            np.testing.assert_allclose(got, keras.ops.convert_to_numpy(v), rtol=rtol, atol=atol)
        assert_slots_equal_keras(ours, theirs, slots, rtol, atol)


def assert_slots_equal_keras(ours, theirs, slots, rtol, atol):
    """Each slot against the Keras variable of the same name (the record names its slots as Keras does)."""
    by_path = {v.path: keras.ops.convert_to_numpy(v) for v in theirs.variables}
    prefix = theirs.name
    for i, per in enumerate(slots):
        for slot_name, got in zip(ours.record.slot_names(ours.hyper), per, strict=True):
            if slot_name == "u_product":  # Nadam's one scalar variable, kept per parameter by kcomp
                want = np.full_like(got, keras.ops.convert_to_numpy(theirs._u_product))
            else:
                want = by_path[f"{prefix}/w{i}_{slot_name}"]
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=slot_name)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_constructor_arguments_and_defaults_are_keras(name):
    cls = type(optimizers.get(name))
    keras_cls = getattr(keras.optimizers, cls.__name__)
    keras_defaults = {k: p.default for k, p in inspect.signature(keras_cls.__init__).parameters.items()
                      if p.default is not p.empty}
    ours = {k: p.default for k, p in inspect.signature(cls).parameters.items() if p.default is not p.empty}
    assert ours == {k: keras_defaults[k] for k in ours}  # every argument kcomp takes, with Keras's default
    assert list(ours) == [k for k in keras_defaults if k in ours]  # in Keras's order (positional use)


@pytest.mark.parametrize("name", NEW)
def test_new_optimizers_by_name_config_and_positional_learning_rate(name):
    opt = optimizers.get(name)
    assert opt.name == name and opt.learning_rate == 0.001
    config = opt.get_config()
    again = type(opt).from_config(config)
    assert again.get_config() == config and again.hyper == opt.hyper
    assert type(opt)(0.5).learning_rate == 0.5
    k = optimizers.get({"name": name, "kwargs": {"learning_rate": 0.01}})  # a .k compile section
    assert type(k) is type(opt) and k.learning_rate == 0.01


@pytest.mark.parametrize("make, match", [
    (lambda: optimizers.Adadelta(rho=math.nan), "rho=nan"),
    (lambda: optimizers.Adadelta(epsilon=-1.0), r"epsilon=-1\.0"),
    (lambda: optimizers.Adamax(beta_2=1.0), r"beta_2=1\.0.*\[0\.0, 1\.0\)"),
    (lambda: optimizers.Nadam(beta_1=-0.5), r"beta_1=-0\.5"),
    (lambda: optimizers.Nadam(beta_1="0.9"), "beta_1='0.9'"),
    (lambda: optimizers.Ftrl(learning_rate_power=0.5), r"learning_rate_power=0\.5.*\[-inf, 0\.0\]"),
    (lambda: optimizers.Ftrl(initial_accumulator_value=-0.1), r"initial_accumulator_value=-0\.1"),
    (lambda: optimizers.Ftrl(l1_regularization_strength=-1), "l1_regularization_strength=-1"),
    (lambda: optimizers.Ftrl(l2_shrinkage_regularization_strength=math.inf), "l2_shrinkage_regularization_strength=inf"),
    (lambda: optimizers.Lion(beta_1=0.0), r"beta_1=0\.0.*\(0\.0, 1\.0\]"),  # Keras: Lion degenerates to SignSGD
    (lambda: optimizers.Lion(epsilon=1e-7), r"epsilon=1e-07\. Lion takes \['beta_1', 'beta_2'\]"),
    (lambda: optimizers.get("nadm"), "Did you mean 'nadam'"),
])
def test_bad_hyper_parameters_are_refused_by_name(make, match):
    with pytest.raises(KcompError, match=match):
        make()


@pytest.mark.parametrize("name", NEW)
def test_short_fit_on_the_interpreted_kernel_equals_the_reference(name):
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    rng = np.random.default_rng(16)
    x = rng.normal(size=(26, 23)).astype("float32")
    y = kcomp.utils.to_categorical(rng.integers(0, 5, 26), 5)
    results = []
    for backend in ("reference", "triton-interpret"):
        kcomp.backend.clear_session()
        kcomp.utils.set_random_seed(17)
        model = Sequential([Input(shape=(23,)), Dense(19, activation="relu"), Dense(5, activation="softmax")])
        start = model.get_weights()
        model.compile(optimizer=name, loss="categorical_crossentropy", backend=backend)
        history = model.fit(x, y, batch_size=9, epochs=2, shuffle=False, verbose=0)
        slots = [s.numpy() for per in model.optimizer.slots.values() for s in per]
        results.append((history.history["loss"], model.get_weights(), slots))
        assert model.optimizer.iterations == 6
        assert any(not np.array_equal(a, b) for a, b in zip(start, model.get_weights()))
    (ref_loss, ref_w, ref_s), (tri_loss, tri_w, tri_s) = results
    np.testing.assert_allclose(tri_loss, ref_loss, rtol=1e-5)
    # FTRL's parameters are -z / quadratic, z summing terms ~1/lr = 1000 times larger (see
    # "cancelling" in tests/tolerances.py): two float32 computations of them differ by ~1e-5 there.
    atol = 3e-5 if name == "ftrl" else 1e-6
    for a, b in zip(ref_w + ref_s, tri_w + tri_s, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=atol)


def test_importing_kcomp_does_not_import_triton():
    """Records hold Triton updates, compiled only when a kernel is built: Triton reads TRITON_INTERPRET
    when imported, and backend="triton-interpret" chooses it after `import kcomp`."""
    import subprocess
    import sys

    code = "import sys, kcomp, kcomp.optimizers, kcomp.ir.registry; print('triton' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def test_cost_reads_the_record():
    from kcomp.ir.builder import GraphBuilder
    from kcomp.ir.cost import node_flops

    b = GraphBuilder("update")
    values = [b.input((3, 4), "float32", f"x{i}") for i in range(2 + 3)] + [b.input((), "float32", n) for n in ("lr", "t")]
    outs = b.emit("optimizer_update", values, algorithm="nadam", count=1)  # p, g and 3 slots
    (node,) = b.finish(list(outs)).nodes
    assert node_flops(node, {}) == ALGORITHMS["nadam"].flops * 12
