"""Loading a Keras file never runs code from it, never writes outside, and never half-loads.

Each hostile file here is refused with a KcompError that names what was refused; a canary
file that the payloads would create if any of them ran must never appear.
"""

import base64
import json
import marshal
import os
import stat
import time
import zipfile

import h5py
import numpy as np
import pytest

import kcomp
from kcomp.errors import KcompError, ShapeError


def small_model():
    x = kcomp.Input((3,))
    h = kcomp.layers.Dense(4, activation="relu")(x)
    return kcomp.Model(x, kcomp.layers.Dense(2)(h))


@pytest.fixture
def archive(tmp_path):
    """A valid .keras file kcomp wrote, and a function that rewrites its config.json."""
    path = tmp_path / "good.keras"
    small_model().save(path)

    def with_config(edit, name="bad.keras"):
        with zipfile.ZipFile(path) as z:
            members = {n: z.read(n) for n in z.namelist()}
        config = json.loads(members["config.json"])
        edit(config)
        members["config.json"] = json.dumps(config).encode()
        out = tmp_path / name
        with zipfile.ZipFile(out, "w") as z:
            for n, data in members.items():
                z.writestr(n, data)
        return out

    return path, with_config


def dense_entry(config, index=1):
    return config["config"]["layers"][index]


CANARY_NAME = "kcomp_canary_must_not_exist"


def canary_lambda_code(canary) -> str:
    fn = eval(f"lambda x: (open({str(canary)!r}, 'w').close(), x)[1]")  # noqa: S307 - the payload under test
    return base64.b64encode(marshal.dumps(fn.__code__)).decode()


def test_lambda_with_marshalled_bytecode_is_refused_and_never_runs(archive, tmp_path):
    _, with_config = archive
    canary = tmp_path / CANARY_NAME

    def add_lambda(config):
        entry = dense_entry(config)
        entry.update(class_name="Lambda", module="keras.layers")
        entry["config"] = {
            "name": entry["config"]["name"], "trainable": True, "dtype": "float32",
            "function": {"class_name": "__lambda__", "config": {"code": canary_lambda_code(canary), "defaults": None, "closure": None}},
            "arguments": {},
        }

    bad = with_config(add_lambda)
    with pytest.raises(KcompError, match=r"keras\.layers\.Lambda.*does not load"):
        kcomp.models.load_model(bad)
    with pytest.raises(KcompError, match="Lambda"):
        kcomp.saving.load_model(bad)
    assert not canary.exists()
    # The payload is live: Keras's unsafe mode runs it while rebuilding the model.
    keras = pytest.importorskip("keras")
    try:
        keras.saving.load_model(bad, safe_mode=False)
    except Exception:
        pass
    assert canary.exists()


@pytest.mark.parametrize(
    "where, payload, named",
    [
        ("layer", {"module": "os", "class_name": "system", "config": {"command": f"touch {CANARY_NAME}"}, "registered_name": None}, "os.system"),
        ("kernel_initializer", {"module": "builtins", "class_name": "eval", "config": {"source": "open('x','w')"}, "registered_name": None}, "builtins.eval"),
        ("activation", {"module": "builtins", "class_name": "function", "config": "eval", "registered_name": "function"}, "builtins.function"),
        ("layer", {"module": "keras.layers", "class_name": "Dense", "config": {"units": 2}, "registered_name": "evil_package>Dense"}, "evil_package>Dense"),
        ("layer", {"module": "keras.layers", "class_name": "TorchModuleWrapper", "config": {}, "registered_name": None}, "TorchModuleWrapper"),
        ("optimizer", {"module": "keras.optimizers", "class_name": "Lamb", "config": {}, "registered_name": None}, "keras.optimizers.Lamb"),
        ("model", {"module": "subprocess", "class_name": "Popen", "config": {}, "registered_name": None}, "subprocess.Popen"),
    ],
)
def test_configs_naming_anything_outside_the_allow_list_are_refused(archive, tmp_path, monkeypatch, where, payload, named):
    _, with_config = archive
    monkeypatch.chdir(tmp_path)

    def edit(config):
        if where == "layer":
            dense_entry(config).clear()
            dense_entry(config).update(payload)
        elif where == "optimizer":
            config["compile_config"] = {"optimizer": payload, "loss": "mse"}
        elif where == "model":
            config.update({k: v for k, v in payload.items() if k != "config"})
        else:
            dense_entry(config)["config"][where] = payload

    bad = with_config(edit)
    with pytest.raises(KcompError) as info:
        kcomp.models.load_model(bad)
    assert named in str(info.value) and "does not load" in str(info.value)
    assert not (tmp_path / CANARY_NAME).exists() and not (tmp_path / "x").exists()


def test_keras_settings_kcomp_does_not_compute_are_refused_by_name(archive):
    _, with_config = archive
    lora = with_config(lambda c: dense_entry(c, 2)["config"].update(lora_rank=4))
    with pytest.raises(KcompError, match="lora_rank=4 is a Keras setting kcomp's Dense does not support"):
        kcomp.models.load_model(lora)
    ema = with_config(lambda c: c.update(compile_config={"optimizer": {"module": "keras.optimizers", "class_name": "Adam",
                                                                      "config": {"use_ema": True}, "registered_name": None},
                                                        "loss": "mse"}))
    with pytest.raises(KcompError, match="use_ema=True"):
        kcomp.models.load_model(ema)
    custom_loss = with_config(lambda c: c.update(compile_config={"optimizer": "adam", "loss": {
        "module": "my_losses", "class_name": "Focal", "config": {}, "registered_name": "Custom>Focal"}}))
    with pytest.raises(KcompError, match="my_losses.Focal"):
        kcomp.models.load_model(custom_loss)
    with pytest.raises(KcompError, match="custom_objects"):
        kcomp.models.load_model(with_config(lambda c: None, "fine.keras"), custom_objects={"Focal": object})


def _zip_with(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            z.writestr(info, data)
    return path


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/kcomp_abs.txt", "assets/../../up.txt"])
def test_members_outside_the_archive_are_refused(archive, tmp_path, member):
    good, _ = archive
    with zipfile.ZipFile(good) as z:
        members = [(n, z.read(n)) for n in z.namelist()]
    info = zipfile.ZipInfo("placeholder")
    info.filename = member  # ZipInfo() would strip a leading '/'; a hostile file keeps it
    bad = _zip_with(tmp_path / "bad.keras", members + [(info, b"x")])
    with pytest.raises(KcompError, match="outside the archive"):
        kcomp.models.load_model(bad)
    assert not (tmp_path.parent / "escape.txt").exists() and not (tmp_path.parent / "up.txt").exists()


def test_symlink_members_are_refused(archive, tmp_path):
    good, _ = archive
    with zipfile.ZipFile(good) as z:
        members = [(n, z.read(n)) for n in z.namelist()]
    link = zipfile.ZipInfo("assets/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    bad = _zip_with(tmp_path / "bad.keras", members + [(link, b"/etc/passwd")])
    with pytest.raises(KcompError, match="symbolic link"):
        kcomp.models.load_model(bad)


def test_zip_bombs_are_refused_without_expanding_them(tmp_path):
    declared = tmp_path / "declared.keras"
    with zipfile.ZipFile(declared, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("config.json", "w") as f:
            chunk = b" " * 2**20
            for _ in range(100):  # 100 MB of spaces: about 100 KB compressed
                f.write(chunk)
    assert declared.stat().st_size < 2**20
    start = time.perf_counter()
    with pytest.raises(KcompError, match="zip bomb"):
        kcomp.models.load_model(declared)
    assert time.perf_counter() - start < 1.0  # refused from the header, not decompressed
    # A header that lies (says 1,000 bytes): reading stops there and the file is refused.
    data = bytearray(declared.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    real = int.from_bytes(data[central + 24 : central + 28], "little")
    assert real == 100 * 2**20
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    lying = tmp_path / "lying.keras"
    lying.write_bytes(bytes(data))
    with pytest.raises(KcompError, match="damaged|zip bomb|not JSON"):
        kcomp.models.load_model(lying)


def test_mismatched_weights_are_refused_naming_both_and_leave_the_model_unchanged(tmp_path):
    model = small_model()
    model.save_weights(tmp_path / "good.weights.h5")
    before = model.get_weights()
    # Break only the LAST array, so a loader that assigned as it went would have changed the first.
    wrong_shape = tmp_path / "shape.weights.h5"
    wrong_shape.write_bytes((tmp_path / "good.weights.h5").read_bytes())
    with h5py.File(wrong_shape, "a") as f:
        del f["layers/dense_1/vars/1"]
        f["layers/dense_1/vars/1"] = np.zeros(5, "float32")
    other = small_model()
    other.set_weights([w + 1 for w in before])
    with pytest.raises(ShapeError, match=r"layers/dense_1/vars/1 has shape \(5,\).*has shape \(2,\)"):
        model.load_weights(wrong_shape)
    wrong_dtype = tmp_path / "dtype.weights.h5"
    wrong_dtype.write_bytes((tmp_path / "good.weights.h5").read_bytes())
    with h5py.File(wrong_dtype, "a") as f:
        del f["layers/dense_1/vars/1"]
        f["layers/dense_1/vars/1"] = np.zeros(2, "float64")
    with pytest.raises(KcompError, match="float64.*float32"):
        model.load_weights(wrong_dtype)
    extra = tmp_path / "extra.weights.h5"
    extra.write_bytes((tmp_path / "good.weights.h5").read_bytes())
    with h5py.File(extra, "a") as f:
        f["layers/dense_7/vars/0"] = np.zeros(2, "float32")
    with pytest.raises(KcompError, match="dense_7"):
        model.load_weights(extra)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    other.load_weights(tmp_path / "good.weights.h5")  # and a good file does load
    for a, b in zip(other.get_weights(), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("link", ["external", "soft", "external group"])
def test_links_out_of_the_weights_file_are_refused(tmp_path, link):
    model = small_model()
    model.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "secret.h5", "w") as f:
        f["data"] = np.ones((3, 4), "float32")
        f["vars/0"] = np.ones((4, 2), "float32")
        f["vars/1"] = np.ones((2,), "float32")
        f["vars/2"] = np.ones((2,), "float32")  # read through the link, it would be "3 arrays" instead
    with h5py.File(tmp_path / "w.weights.h5", "a") as f:
        if link == "external group":  # a whole layer's group in another file
            del f["layers/dense_1"]
            f["layers/dense_1"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/")
        else:
            del f["layers/dense/vars/0"]
            f["layers/dense/vars/0"] = h5py.ExternalLink(str(tmp_path / "secret.h5"), "/data") if link == "external" else h5py.SoftLink("/layers/dense/vars/1")
    with pytest.raises(KcompError, match="Link, not stored in the file"):
        model.load_weights(tmp_path / "w.weights.h5")


def test_writes_are_atomic(tmp_path):
    path = tmp_path / "m.keras"
    model = small_model()
    model.save(path)
    old = path.read_bytes()
    model.compile(optimizer="adam", loss=lambda y_true, y_pred: kcomp.ops.mean(kcomp.ops.square(y_true - y_pred), axis=-1),
                  backend="reference")
    with pytest.raises(KcompError, match="is a function"):
        model.save(path)  # the config cannot name the function: nothing is written
    assert path.read_bytes() == old and sorted(os.listdir(tmp_path)) == ["m.keras"]
    with pytest.raises(KcompError, match="ends in .keras"):
        model.save(tmp_path / "m.h5")


def test_files_that_are_not_keras_archives(tmp_path):
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(KcompError, match="Expected a .keras file"):
        kcomp.models.load_model(tmp_path / "text.keras")
    with h5py.File(tmp_path / "legacy.h5", "w") as f:
        f.create_group("model_weights")
        f.attrs["layer_names"] = [b"dense"]
    with pytest.raises(KcompError, match="Keras 2"):
        small_model().load_weights(tmp_path / "legacy.h5")
    with pytest.raises(KcompError, match="not JSON"):
        kcomp.models.model_from_json("{not json")


def test_configs_nested_too_deeply_are_refused(archive, tmp_path):
    good, _ = archive
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    n = 100_000
    deep = '{"class_name": "__tuple__", "config": {"value": [' * n + "1" + "]}}" * n
    text = members["config.json"].decode()
    assert '"units": 4' in text
    members["config.json"] = text.replace('"units": 4', f'"units": {deep}', 1).encode()
    bad = _zip_with(tmp_path / "deep.keras", list(members.items()))
    with pytest.raises(KcompError, match="too deeply|not JSON"):
        kcomp.models.load_model(bad)
    with pytest.raises(KcompError, match="too deeply|not JSON"):
        kcomp.models.model_from_json("[" * n + "]" * n)
