"""A functional model's graph of layer calls: the order calls run in, and the order Keras lists
layers in (and so their weights: get_weights / set_weights move between Keras and kcomp)."""

from kcomp.errors import ArgumentError
from kcomp.layers.base import Layer
from kcomp.layers.tensors import KerasTensor, LayerCall, flatten


def check_weight_paths(layers: list[Layer]) -> None:
    """Weights are graph parameters named by their paths (layer/weight): two layers of the same name
    in nested models would share them."""
    owners: dict[str, object] = {}
    for layer in layers:
        for w in layer.weights:
            other = owners.setdefault(w.path, w)
            if other is not w:
                raise ArgumentError(
                    f'Two different layers in the model (nested models included) are named "{w.owner.name}" '
                    f"(both have a weight {w.path}); layer names must be unique. Rename one."
                )


def walk(outputs: list[KerasTensor]) -> tuple[list[LayerCall], dict[int, int]]:
    """Every layer call the outputs depend on, each after the calls it reads from (a depth-first
    post-order from the outputs, inputs in the order they were passed), and for each layer
    (by id) the order in which the walk first reached it: Keras's traversal of the node graph."""
    order: list[LayerCall] = []
    first_reached: dict[int, int] = {}
    seen: set[int] = set()
    for t in outputs:
        if not isinstance(t, KerasTensor) or t.call is None:
            raise ArgumentError(f"Model outputs must be tensors made by calling layers on Input()s, received {t!r}.")
    # An explicit stack: models may be thousands of layers deep.
    stack = [(t.call, False) for t in reversed(outputs)]
    while stack:
        call, expanded = stack.pop()
        if expanded:
            order.append(call)
            continue
        if id(call) in seen:
            continue
        seen.add(id(call))
        first_reached.setdefault(id(call.layer), len(first_reached))
        stack.append((call, True))
        stack.extend((t.call, False) for t in reversed(flatten(call.inputs)) if id(t.call) not in seen)
    return order, first_reached


def keras_layer_order(inputs: list[KerasTensor], calls: list[LayerCall], first_reached: dict[int, int]) -> list[Layer]:
    """The layers in the order Keras lists a functional model's layers (and so its weights).

    A call's depth is the length of the longest path from it to an output; a layer's depth is
    its deepest call's. Layers come deepest first; at equal depth, in the order the walk from
    the outputs first reached them. Inputs nothing depends on come at depth 0, before the rest.
    """
    depth_of_call: dict[int, int] = {}
    depth_of_layer: dict[int, int] = {}
    layer_of: dict[int, Layer] = {}
    for call in reversed(calls):  # outputs first: a call's depth is final before its inputs are reached
        depth = max(depth_of_call.get(id(call), 0), depth_of_layer.get(id(call.layer), 0))
        depth_of_call[id(call)] = depth
        depth_of_layer[id(call.layer)] = depth
        layer_of[id(call.layer)] = call.layer
        for t in flatten(call.inputs):
            depth_of_call[id(t.call)] = max(depth_of_call.get(id(t.call), 0), depth + 1)
    rank = dict(first_reached)
    for t in inputs:
        layer = t.call.layer
        if id(layer) not in depth_of_layer:
            depth_of_layer[id(layer)], rank[id(layer)], layer_of[id(layer)] = 0, -1, layer
    arrival = {key: i for i, key in enumerate(depth_of_layer)}
    keys = sorted(depth_of_layer, key=lambda k: (-depth_of_layer[k], rank[k], arrival[k]))
    return [layer_of[k] for k in keys]
