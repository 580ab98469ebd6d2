"""Keras 3's `.weights.h5` layout: every weight addressed by the model's structure, not by layer names.

Keras 3 (keras/src/saving/saving_lib.py) walks the model and writes each layer's
variables under `layers/<snake_case class name>[_<n>]/vars/<i>`, counting layers of
one class in the order of `model.layers`; a recurrent layer keeps its weights in
its cell, `layers/lstm/cell/vars/<i>`. A layer lists the variables it created as
trainable first, then the others (BatchNormalization: gamma, beta, moving_mean,
moving_variance). A compiled model adds `optimizer/vars/<i>`: the iteration count,
the learning rate (unless it is a schedule), then the slots, per group of slots
Keras creates together, per trainable variable (Adam: m, v of each weight in turn,
then every v_hat when amsgrad; Nadam: m, v, then its one scalar u_product). Layer
names never appear in a path, so a second, identical model (other generated names)
loads the file. The paths and the order are kcomp/saving/keras_paths.py's.

The order of `model.layers` is Keras's: a Sequential's stack; for a functional
model the layers sorted by their depth from the outputs (deepest first), ties in
the order a depth-first walk from the outputs first meets them
(keras/src/ops/function.py: map_graph). `keras_paths.keras_layers` computes it for kcomp models.
Anything else (a subclassed model, a custom layer with sublayers) is walked as
Keras walks it: its own variables at `<path>/vars`, then each attribute that holds
layers, by attribute name (`first/vars/0`, `blocks/dense_1/vars/0`).

Loading checks every array against the model (present, a plain dataset, dtype and
shape) before assigning any, so a failed load leaves the model unchanged.
"""

import io
import warnings

import numpy as np
import torch

from kcomp.errors import KcompError, ShapeError, format_shape
from kcomp.saving.keras_paths import has_lr_variable, slot_layout, trainable_in_keras_order, weight_entries
from kcomp.support.files import write_bytes_atomic


class WeightsFileError(KcompError):
    """A weights file that does not fit the model (missing, extra, or mismatched arrays)."""


# -- writing -----------------------------------------------------------------------
BFLOAT16 = np.dtype("V2")  # how Keras stores bfloat16: 2 opaque bytes, with the attribute dtype="bfloat16"


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            return value.view(torch.int16).numpy().view(BFLOAT16)
        return value.numpy()
    return np.asarray(value)


def _store(group, key: str, value) -> None:
    array = _numpy(value)
    group[key] = array
    if array.dtype == BFLOAT16:
        group[key].attrs["dtype"] = "bfloat16"


def _tensor(array: np.ndarray, dtype: str) -> torch.Tensor:
    """An array read from the file as a tensor of `dtype` (bfloat16 from its raw bits)."""
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, dtype=np.dtype(dtype)))  # native byte order


def optimizer_arrays(model, opt=None) -> list[np.ndarray] | None:
    """The arrays Keras's `optimizer/vars` holds for this model, or None when it has no optimizer.
    A LossScaleOptimizer's are Keras's: its own (iterations and learning rate, unused: 0), its
    good-step count and scale, then its inner optimizer's (which Keras also writes on their own,
    under optimizer/inner_optimizer/vars)."""
    opt = model.optimizer if opt is None else opt
    if opt is None:
        return None
    if getattr(opt, "counts_on_device", False):
        opt.iterations  # noqa: B018  (reads the device's count into the inner optimizer)
        return [np.asarray(0, dtype=np.int32), np.asarray(0.0, dtype=np.float32),
                np.asarray(int(opt.step_counter), dtype=np.int32), np.asarray(float(opt.dynamic_scale), dtype=np.float32),
                *optimizer_arrays(model, opt.inner_optimizer)]
    arrays = [np.asarray(opt.iterations, dtype=np.int32)]
    if has_lr_variable(opt):
        arrays.append(np.asarray(opt.learning_rate, dtype=np.float32))
    weights = trainable_in_keras_order(model)
    if weights and all(w.path in opt.slots for w in weights):  # built: Keras builds on the first step too
        for j, _, w in slot_layout(opt, weights):
            # a shared scalar: any element of any copy (Keras gives it the first weight's dtype)
            arrays.append(opt.slots[w.path][j] if w is not None else opt.slots[weights[0].path][j].reshape(-1)[0])
    return arrays


def write_h5(model, target) -> None:
    """Write the model's weights (and optimizer state) in Keras's layout into `target` (a path or file object)."""
    import h5py

    with h5py.File(target, "w") as f:
        for group_path, name, variables in weight_entries(model):
            group = f.require_group(group_path)
            group.attrs["name"] = name
            for i, w in enumerate(variables):
                _store(group, str(i), w.value)
        arrays = optimizer_arrays(model)
        if arrays is not None:
            group = f.require_group("optimizer/vars")
            group.attrs["name"] = model.optimizer.name
            for i, a in enumerate(arrays):
                _store(group, str(i), a)
        if getattr(model.optimizer, "counts_on_device", False):
            group = f.require_group("optimizer/inner_optimizer/vars")
            group.attrs["name"] = model.optimizer.inner_optimizer.name
            for i, a in enumerate(arrays[4:]):
                _store(group, str(i), a)


def h5_bytes(model) -> bytes:
    buffer = io.BytesIO()
    write_h5(model, buffer)
    return buffer.getvalue()


def save_weights_h5(model, path) -> None:
    write_bytes_atomic(path, h5_bytes(model))


# -- reading -----------------------------------------------------------------------
_NUMERIC = "fiub"


def _node(f, path: str, source: str):
    """The object at `path` (None if absent), reached through hard links only: a soft or external
    link (which could point at another file) is refused before it is followed."""
    import h5py

    node = f
    parts = path.split("/")
    for i, part in enumerate(parts):
        if not isinstance(node, h5py.Group):
            return None
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise WeightsFileError(
                f"{source}: {'/'.join(parts[: i + 1])} is a {type(link).__name__}, not stored in the file; "
                "kcomp reads only arrays stored in the file itself. Re-save the weights with Keras or kcomp."
            )
        node = node[part]
    return node


def _dataset(f, path: str, source: str):
    """The dataset at `path`, refusing links to other places or files and external storage."""
    import h5py

    node = _node(f, path, source)
    if node is None:
        return None
    if not isinstance(node, h5py.Dataset):
        raise WeightsFileError(f"{source}: {path} is not an array. Re-save the weights with Keras or kcomp.")
    if node.external or node.is_virtual:
        raise WeightsFileError(f"{source}: {path} keeps its data outside the file; kcomp reads only arrays stored in it.")
    return node


def _names_in(f, group_path: str, source: str) -> list[str]:
    import h5py

    group = _node(f, group_path, source)
    return sorted(group.keys()) if isinstance(group, h5py.Group) else []


def _read_checked(f, path: str, shape: tuple, dtype: str, source: str, what: str) -> torch.Tensor:
    ds = _dataset(f, path, source)
    if ds is None:
        raise WeightsFileError(f"{source} has no array {path} for {what}; the file was saved from a different model.")
    if ds.dtype == BFLOAT16 and ds.attrs.get("dtype") == "bfloat16":
        stored = "bfloat16"
    else:
        stored = ds.dtype.name if ds.dtype.kind in _NUMERIC else f"{ds.dtype} (not numbers)"
    if stored != dtype:
        raise WeightsFileError(
            f"{source}: {path} holds {stored} data, {what} is {dtype}. Save the weights from a {dtype} model."
        )
    if tuple(ds.shape) != tuple(shape):
        raise ShapeError(
            f"{source}: {path} has shape {format_shape(ds.shape)}, {what} has shape {format_shape(shape)}; "
            "the file was saved from a different model."
        )
    return _tensor(ds[()], dtype)


def _read_scalar(f, path: str, kinds: str, source: str, what: str):
    ds = _dataset(f, path, source)
    if ds is None:
        raise WeightsFileError(f"{source} has no array {path} for {what}.")
    if ds.dtype.kind not in kinds or ds.shape != ():
        raise WeightsFileError(f"{source}: {path} holds {ds.dtype} of shape {format_shape(ds.shape)}; {what} is a scalar.")
    return ds[()].item()


def read_h5(model, f, source: str, load_optimizer: bool = True) -> list:
    """Check the file against the model and return the assignments to make (nothing is changed here)."""
    import h5py

    if "layers" not in f and ("model_weights" in f or "layer_names" in f.attrs):
        raise WeightsFileError(
            f"{source} is a Keras 2 (legacy HDF5) weights file; kcomp reads Keras 3's .weights.h5. "
            "Load it in Keras 3 and save it again with model.save_weights('model.weights.h5')."
        )
    assignments = []  # (setter, array)
    expected_groups = set()
    for group_path, _, variables in weight_entries(model):
        expected_groups.add(group_path)
        stored = _names_in(f, group_path, source)
        if len(stored) != len(variables) or stored != sorted(str(i) for i in range(len(variables))):
            raise WeightsFileError(
                f"{source}: {group_path} holds {len(stored)} arrays, the model has {len(variables)} there "
                f"({', '.join(w.path for w in variables) or 'none'}); the file was saved from a different model."
            )
        for i, w in enumerate(variables):
            value = _read_checked(f, f"{group_path}/{i}", w.shape, w.dtype, source, f"weight {w.path}")
            assignments.append((_weight_setter(w), value))
    extra = []

    def visit(name, obj):
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        if isinstance(obj, h5py.Dataset) and parent not in expected_groups and not name.startswith("optimizer/"):
            extra.append(name)

    f.visititems(visit)  # hard links only: a linked group's contents are not visited
    if extra:
        raise WeightsFileError(
            f"{source} holds weights the model has no place for: {extra[:5]}{' ...' if len(extra) > 5 else ''}; "
            "the file was saved from a different model."
        )
    if load_optimizer and model.optimizer is not None and _node(f, "optimizer", source) is not None:
        assignments += _read_optimizer(model, f, source)
    return assignments


def _read_optimizer(model, f, source: str) -> list:
    opt = model.optimizer
    weights = trainable_in_keras_order(model)
    stored = _names_in(f, "optimizer/vars", source)
    scaled = getattr(opt, "counts_on_device", False)  # a LossScaleOptimizer: 4 of its own first
    out, first = [], 0
    if scaled:
        if len(stored) < 4:
            warnings.warn(f"{source}: the saved optimizer is not a LossScaleOptimizer's; its state was not loaded.",
                          stacklevel=3)
            return []
        good = _read_scalar(f, "optimizer/vars/2", "iu", source, "the loss scale's good-step count")
        scale = _read_scalar(f, "optimizer/vars/3", "f", source, "the loss scale")
        out += [(lambda v: setattr(opt, "step_counter", torch.tensor(float(v))), good),
                (lambda v: setattr(opt, "dynamic_scale", torch.tensor(float(v))), scale)]
        first, stored = 4, stored[4:]
    lr_var = has_lr_variable(opt)
    head = 2 if lr_var else 1
    layout = slot_layout(opt, weights)
    built = head + len(layout)
    if len(stored) == head:
        wanted = head  # saved before the first step: the count and the learning rate only
    elif len(stored) == built:
        wanted = built
    else:
        warnings.warn(
            f"{source}: the saved optimizer has {len(stored)} variables, this model's {opt.name} has {built}; "
            "its state was not loaded (the weights were).",
            stacklevel=3,
        )
        return []
    iterations = _read_scalar(f, f"optimizer/vars/{first}", "iu", source, "the optimizer's iteration count")
    out.append((lambda v: setattr(opt, "iterations", int(v)), iterations))
    if lr_var:
        lr = _read_scalar(f, f"optimizer/vars/{first + 1}", "f", source, "the learning rate")
        out.append((lambda v: setattr(opt, "learning_rate", float(v)), lr))
    if wanted == built:
        for index, (j, name, w) in enumerate(layout, start=first + head):
            shape, dtype, targets = (w.shape, w.dtype, [w]) if w is not None else ((), weights[0].dtype, weights)
            what = f"the optimizer's {name} of {w.path}" if w is not None else f"the optimizer's {name} (one scalar)"
            value = _read_checked(f, f"optimizer/vars/{index}", shape, dtype, source, what)
            out.append((_slot_setter(opt, targets, j), value))
    return out


def _weight_setter(w):
    def set_weight(tensor):
        w.value = tensor.to(w.value.device)  # checked against the weight's shape and dtype when read

    return set_weight


def _slot_setter(opt, weights, j):
    """Set slot j of each weight to the value read (a shared scalar fills each weight's whole slot)."""
    def set_slot(tensor):
        for w in weights:
            slots = opt.slots.get(w.path)
            if slots is None:
                slots = opt.slots[w.path] = [opt.initial_slot(w.value, i) for i in range(opt.slots_per_param)]
            # Assign into the list the training step reads (a device step keeps the list itself);
            # copy_ broadcasts a scalar and keeps the slot's device and dtype.
            slots[j] = torch.empty_like(slots[j]).copy_(tensor)

    return set_slot


def apply(assignments) -> None:
    for setter, value in assignments:
        setter(value)


def load_weights_h5(model, path) -> None:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsFileError(f"cannot read weights from {path}: {e}. Expected a .weights.h5 file written by Keras 3 or kcomp.") from None
    with f:
        assignments = read_h5(model, f, str(path))
    apply(assignments)
