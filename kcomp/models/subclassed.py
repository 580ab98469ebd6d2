"""Subclassed models (`class MyModel(Model)` with its own `call`), built as Keras builds them: on
the first data, tensor or `build(input_shape)`, the model's `call` is traced once on Inputs of
those shapes, as one layer whose graph holds the layers it uses inline."""

from kcomp.ir.builder import GraphBuilder
from kcomp.layers.base import Layer
from kcomp.layers.tensors import to_tensor
from kcomp.layers.core import InputLayer
from kcomp.models.input_data import as_list


def data_specs(x) -> list:
    """(shape, dtype) of each array in `x`, the batch left open: what a subclassed model is built for."""
    arrays = as_list(x)
    specs = []
    for a in arrays:
        t = to_tensor(a)
        specs.append(((None, *t.shape[1:]), "float32" if t.is_floating_point() else "int32"))
    return specs


def build_subclassed(model, specs: list, several: bool) -> None:
    """Inputs of these (shape, dtype)s, and one call of the model's own `call` on them, traced as a
    layer (its layers inline), as Keras builds a subclassed model on its first data."""
    from kcomp.models.functional import Model  # here, not at the top: functional imports this module

    inputs = [InputLayer(batch_shape=shape, dtype=dtype).output for shape, dtype in specs]
    if type(model).build is not Model.build and not model._weights:  # the subclass's own build, once (unless called)
        model.build([spec.shape for spec in inputs] if several else inputs[0].shape)
    outputs = _SubclassedCall(model)(inputs if several else inputs[0])
    model._single_output = not isinstance(outputs, (list, tuple))
    model._connect(inputs, as_list(outputs))


class _SubclassedCall(Layer):
    """The one node of a subclassed model's graph: its `call`, traced with the layers it uses inline."""

    _not_sublayers = frozenset({"model"})  # the model's weights are the model's, not this node's

    def __init__(self, model):
        super().__init__(name=f"{model.name}_call")
        self.model = model

    def trace(self, builder: GraphBuilder, inputs, training: bool = False):
        return self.model._trace_call(builder, inputs, training)
