"""What a model is given, checked against its Inputs: data (predict's or fit's x, a call on arrays)
as tensors, one per input, in the Input's dtype, of the Input's shape, all with the same number of
samples; and the IR values of an outer model that calls it as a layer."""

import torch

from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.types import TORCH_DTYPES
from kcomp.layers.tensors import keras_shape, to_tensor


def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def prepare_inputs(model, x) -> list[torch.Tensor]:
    """One tensor per model input from `x`: an array, a list of arrays (in the inputs' order), or
    a dict by input name."""
    if isinstance(x, dict):
        missing = [t.call.layer.name for t in model.inputs if t.call.layer.name not in x]
        if missing:
            raise ArgumentError(f'Model "{model.name}" needs inputs named {missing}; received keys {sorted(x)}.')
        x = [x[t.call.layer.name] for t in model.inputs]
    if len(model.inputs) == 1 and isinstance(x, (list, tuple)) and len(x) == 1:
        x = x[0]  # predict([x]) on a model with one input, as Keras takes it
    xs = as_list(x) if len(model.inputs) > 1 else [x]
    if len(xs) != len(model.inputs):
        raise ArgumentError(f'Model "{model.name}" has {len(model.inputs)} inputs, received {len(xs)} arrays.')
    tensors = []
    for i, (data, spec) in enumerate(zip(xs, model.inputs)):
        t = to_tensor(data, spec.dtype)
        if t.dtype is not TORCH_DTYPES[spec.dtype] and not torch.is_floating_point(t) and spec.dtype.startswith(("float", "bfloat")):
            t = t.to(TORCH_DTYPES[spec.dtype])
        # Symbolic dims of the IR shape (the batch, unknown sizes) are strings and take any size.
        # Most inputs have none past the batch: the whole comparison first (predict_on_batch's cost).
        want, got = spec.ir_shape, t.shape
        if len(got) != len(want) or (got[1:] != want[1:] and any(isinstance(w, int) and w != g for w, g in zip(want[1:], got[1:]))):
            raise ShapeError(
                f'Model "{model.name}" expects input {i} ("{spec.call.layer.name}") of shape {format_shape(spec.shape)}, '
                f"received data of shape {format_shape(tuple(got))}."
            )
        tensors.append(t)
    lengths = {len(t) for t in tensors} if len(tensors) > 1 else ()
    if len(lengths) > 1:
        raise ShapeError(f"All inputs must have the same number of samples, received {sorted(lengths)}.")
    return tensors


def traced_inputs(model, builder, flat: list) -> list:
    """The IR values `flat` of an outer model calling `model` as a layer, checked against its Inputs
    (unknown sizes on either side match anything) and cast to each Input's dtype, as Keras converts
    a model's inputs."""
    if len(flat) != len(model.inputs):
        raise ArgumentError(f'Model "{model.name}" has {len(model.inputs)} inputs, received {len(flat)} tensors.')
    values = []
    for i, (v, spec) in enumerate(zip(flat, model.inputs)):
        want, got = spec.shape, keras_shape(v.shape)
        if len(want) != len(got) or any(w is not None and g is not None and w != g for w, g in zip(want[1:], got[1:])):
            raise ShapeError(
                f'Model "{model.name}" expects input {i} ("{spec.call.layer.name}") of shape {format_shape(want)}, '
                f"received a tensor of shape {format_shape(got)}."
            )
        if v.dtype != spec.dtype:
            with builder.scope(model.name):
                cast = builder.emit1("cast", [v], dtype=spec.dtype)
            if v.id in builder.masks:  # keeping the input's mask, as Keras's conversion does
                builder.masks[cast.id] = builder.masks[v.id]
            v = cast
        values.append(v)
    return values
