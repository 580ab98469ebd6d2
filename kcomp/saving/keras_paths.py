"""Where Keras 3 keeps each weight of a model in its files, and in which order.

Keras 3 (keras/src/saving/saving_lib.py) walks the model and writes each layer's variables
under `layers/<snake_case class name>[_<n>]/vars/<i>`, counting layers of one class in the
order of `model.layers` (`keras_paths`, `weight_entries`); its optimizer's slots follow the
trainable weights in Keras's order (`slot_layout`). kcomp/saving/keras_h5.py reads and writes
the `.weights.h5` file from these; the model files (serialization.py, k_text.py) name the
layers in the same order.
"""

from kcomp.layers.tensors import flatten
from kcomp.session import to_snake_case


def model_calls(model) -> list:
    """The layer calls a functional model runs, each after its inputs."""
    calls = getattr(model, "_call_order", None)  # a model that is also a layer keeps its own calls apart
    return calls if isinstance(calls, list) else model._calls


def is_model(layer) -> bool:
    from kcomp.models.functional import Model

    return isinstance(layer, Model)


def keras_class_name(layer) -> str:
    """The class Keras gives the object: a functional model is a Functional."""
    from kcomp.models.sequential import Sequential

    if isinstance(layer, Sequential):
        return "Sequential"
    return "Functional" if is_model(layer) else type(layer).__name__


def keras_layers(model) -> list:
    """The model's layers in the order Keras's `model.layers` has them (which numbers the paths)."""
    from kcomp.models.sequential import Sequential

    if isinstance(model, Sequential):
        return model.layers
    calls = model_calls(model)
    calls_in_model = {id(call) for call in calls}
    finished: set[int] = set()
    post_order = []  # calls, inputs before the calls that read them
    first_seen: dict[int, int] = {}  # id(layer) -> when the walk first met it
    layers_by_id = {}
    stack = [(t.call, False) for t in reversed(flatten(model.outputs))]
    while stack:
        call, expanded = stack.pop()
        if expanded:
            finished.add(id(call))
            post_order.append(call)
            continue
        if id(call) in finished:
            continue
        first_seen.setdefault(id(call.layer), len(first_seen))
        layers_by_id[id(call.layer)] = call.layer
        stack.append((call, True))
        stack.extend((t.call, False) for t in reversed(flatten(call.inputs)) if id(t.call) in calls_in_model)
    call_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for call in reversed(post_order):
        depth = max(call_depth.setdefault(id(call), 0), layer_depth.get(id(call.layer), 0))
        layer_depth[id(call.layer)] = call_depth[id(call)] = depth
        for t in flatten(call.inputs):
            if id(t.call) in calls_in_model:
                call_depth[id(t.call)] = max(depth + 1, call_depth.get(id(t.call), 0))
    for t in model.inputs:  # an input no output reads still counts, at depth 0
        if id(t.call.layer) not in layer_depth:
            layer_depth[id(t.call.layer)], first_seen[id(t.call.layer)] = 0, -1
            layers_by_id[id(t.call.layer)] = t.call.layer
    return sorted(layers_by_id.values(), key=lambda l: (-layer_depth[id(l)], first_seen[id(l)]))


def _unique(base: str, used: dict) -> str:
    """Keras's names within one list: dense, dense_1, dense_2, ..."""
    if base in used:
        used[base] += 1
        return f"{base}_{used[base]}"
    used[base] = 0
    return base


def keras_paths(model, prefix: str = "") -> list[tuple[str, object]]:
    """(path of the layer's group in the file, layer) for every layer of a Sequential or functional model."""
    used: dict[str, int] = {}
    return [(f"{prefix}layers/{_unique(to_snake_case(keras_class_name(l)), used)}", l) for l in keras_layers(model)]


def _has_cell(layer) -> bool:
    from kcomp.layers.recurrent import _RNN

    return isinstance(layer, _RNN)


def layer_variables(layer) -> list:
    """A layer's own variables (not its sublayers') in Keras's order: those created trainable, then the others."""
    own = [w for w in layer.weights if w.owner is layer or w.owner is None]
    return [w for w in own if w.trainable] + [w for w in own if not w.trainable]


def _holds_layers(value) -> bool:
    from kcomp.layers.base import Layer

    items = list(value.values()) if isinstance(value, dict) else value
    return isinstance(value, Layer) or (isinstance(items, (list, tuple)) and bool(items) and all(isinstance(v, Layer) for v in items))


def _children(obj) -> list[tuple[str, object]]:
    """What Keras walks after an object's own variables: a Sequential's or functional model's `layers`;
    for any other layer or model, its attributes that hold layers, sorted by name (private ones
    last), a subclassed model's `layers` among them (keras/src/saving/saving_lib.py: _walk_saveable)."""
    from kcomp.models.sequential import Sequential

    if isinstance(obj, Sequential) or (is_model(obj) and not getattr(obj, "_subclassed", False)):
        return [("layers", keras_layers(obj))]
    skip = {"_sublayers"} | set(getattr(type(obj), "_not_sublayers", ()))
    named = {k: v for k, v in vars(obj).items() if k not in skip and _holds_layers(v)}
    if is_model(obj):
        named.setdefault("layers", obj.layers)
    return sorted(named.items(), key=lambda item: f"~{item[0]}" if item[0].startswith("_") else item[0])


def weight_entries(model) -> list[tuple[str, str, list]]:
    """(vars group path, the group's name attribute, variables) for the model and everything in it."""
    out: list = []
    _walk(model, "", out, set())
    return out


def _walk(obj, path: str, out: list, visited: set) -> None:
    if id(obj) in visited:  # a layer reached again keeps the path it was first saved under
        return
    visited.add(id(obj))
    if _has_cell(obj):  # Keras's recurrent layers keep their weights in a cell sublayer
        out.append((f"{path}/vars", obj.name, []))
        out.append((f"{path}/cell/vars", f"{to_snake_case(type(obj).__name__)}_cell", layer_variables(obj)))
    else:
        out.append((f"{path}/vars" if path else "vars", obj.name, layer_variables(obj)))
    for attr, value in _children(obj):
        where = f"{path}/{attr}" if path else attr
        if not isinstance(value, (list, tuple, dict)):
            _walk(value, where, out, visited)
            continue
        used: dict[str, int] = {}
        for item in value.values() if isinstance(value, dict) else value:
            _walk(item, f"{where}/{_unique(to_snake_case(keras_class_name(item)), used)}", out, visited)


def _sublayers(obj) -> list:
    from kcomp.models.sequential import Sequential

    if isinstance(obj, Sequential) or (is_model(obj) and not getattr(obj, "_subclassed", False)):
        return keras_layers(obj)
    return obj.layers if is_model(obj) else list(obj.__dict__.get("_sublayers", []))


def trainable_in_keras_order(obj) -> list:
    """The variables Keras's optimizer tracks (model.trainable_variables), in its order: an object's
    own trainable variables, then each of its layers' in turn."""
    if not obj.trainable:
        return []
    out, seen = [], set()
    for w in [w for w in layer_variables(obj) if w.trainable] + [w for l in _sublayers(obj) for w in trainable_in_keras_order(l)]:
        if id(w) not in seen:
            seen.add(id(w))
            out.append(w)
    return out


# Slots Keras keeps as ONE scalar variable of the optimizer, not one per weight: Nadam's u_product
# (Keras names it "variable"). kcomp keeps a copy per parameter, every element the same value
# (kcomp/ir/optim/nadam.py says why): a file holds the scalar, and reading fills every copy with it.
SHARED_SLOTS = frozenset({"u_product"})


def slot_layout(optimizer, weights) -> list[tuple[int, str, object]]:
    """The optimizer's slot variables as Keras lists them after the iteration count and the learning
    rate: (kcomp's slot index, the slot's name, its weight, or None for a shared scalar). The record's
    groups are Keras's add_optimizer_variables calls, each walking every weight (Adam: m, v of each
    weight in turn, then every v_hat when amsgrad); a shared slot is one variable where its group is."""
    layout, index = [], 0
    if not weights:  # nothing to train: no slots (a shared scalar would have no dtype to take)
        return layout
    for group in optimizer.record.slot_groups(optimizer.hyper):
        slots = list(enumerate(group, start=index))
        index += len(group)
        layout += [(j, name, None) for j, name in slots if name in SHARED_SLOTS]
        layout += [(j, name, w) for w in weights for j, name in slots if name not in SHARED_SLOTS]
    return layout


def has_lr_variable(optimizer) -> bool:
    from kcomp.optimizers.schedules import LearningRateSchedule

    return not isinstance(optimizer.learning_rate, LearningRateSchedule)
