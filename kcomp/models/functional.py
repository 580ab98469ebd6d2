"""Model: the functional API (`Model(inputs, outputs)`), and what every model shares.

A model keeps the DAG of layer calls that connects its inputs to its outputs;
`to_graph()` traces those calls into one IR graph, which the executors run.
A model is a Layer, as in Keras: called on tensors it becomes one node of an
outer model (transfer learning), and the outer model's graph holds its layers'
nodes inline (`trace`).

The class is Keras's model API; the work behind some of its methods lives beside it:
input_data.py (data checked against the inputs), prediction.py (predict in batches),
training_call.py (model(x, training=True)) and subclassed.py (a subclassed model's build).
"""

import weakref

import torch

from kcomp import distribution, session
from kcomp.errors import ArgumentError, GraphError, NotBuiltError
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Graph
from kcomp.ir.verify import verify
from kcomp.layers.base import Layer
from kcomp.layers.tensors import KerasTensor, LayerCall, flatten, pack_like
from kcomp.layers.core import InputLayer
from kcomp.models import prediction
from kcomp.models.input_data import as_list, prepare_inputs, traced_inputs
from kcomp.models.subclassed import build_subclassed, data_specs
from kcomp.models.topology import check_weight_paths, keras_layer_order, walk
from kcomp.models.training_call import call_in_training_mode
from kcomp.runtime.executor import make_executor
from kcomp.training.streams import stream_of
from kcomp.variables import Variable


# Keras 3's other compile arguments: weighted_metrics is used; the rest choose how Keras runs
# (eagerly, jit, steps per call, loss scaling for mixed precision), which kcomp decides itself.
KERAS_COMPILE_OPTIONS = ("weighted_metrics", "run_eagerly", "steps_per_execution", "jit_compile", "auto_scale_loss")


class Model(Layer):
    """`Model(inputs, outputs, name=None)`: a DAG of layers with one or more inputs and outputs."""

    _default_name = "functional"
    _not_sublayers = frozenset({"_layer_order"})  # the DAG's layers; a subclassed model's own are its attributes

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True):
        self._graph_cache: dict[bool, Graph] = {}
        self.inputs: list[KerasTensor] = []
        self.outputs: list[KerasTensor] = []
        # The model's layer calls in the order they run (each after its inputs). (The model's own
        # `_calls`, from Layer, are where it was called as a layer of another model.)
        self._call_order: list[LayerCall] = []
        self._layer_order: list[Layer] = []  # Keras's order of model.layers (keras_layer_order)
        self._inputs_struct = self._outputs_struct = None  # `input` / `output` as passed to Model(...)
        self._single_output = True
        self.compile_settings: dict = {}
        self._compile_args = None  # compile's (optimizer, loss, loss_weights, metrics), resolved once built
        self._training = None
        self.stop_training = False
        self._executor = None
        self._call_executors: dict[bool, object] = {}
        self._weights_read_for = None  # params()'s list of weights, with what it was read for
        self._training_calls = 0  # model(x, training=True) calls so far: each draws new dropout masks
        default = session.to_snake_case(type(self).__name__) if self._subclassed else self._default_name  # MyModel: my_model
        super().__init__(name=name or session.unique_name(default), trainable=trainable)
        self._backend = "reference"  # predict before compile runs the reference executor, as Keras predicts uncompiled
        self._precision = "tf32"
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ArgumentError("Model(inputs, outputs) needs both inputs and outputs.")
            self._single_output = not isinstance(outputs, (list, tuple))
            self._inputs_struct, self._outputs_struct = inputs, outputs
            self._connect(as_list(inputs), as_list(outputs))

    # -- structure ---------------------------------------------------------------
    def _connect(self, inputs: list, outputs: list) -> None:
        for t in inputs:
            if not (isinstance(t, KerasTensor) and t.call is not None and isinstance(t.call.layer, InputLayer)):
                raise ArgumentError(f"Model inputs must be tensors returned by kcomp.Input(...), received {t!r}.")
        calls, first_reached = walk(outputs)
        given = {id(t.call) for t in inputs}
        for call in calls:
            if isinstance(call.layer, InputLayer) and id(call) not in given:
                raise GraphError(
                    f'The model\'s outputs depend on input "{call.layer.name}", which is not among the inputs '
                    f"passed to Model(...); add it to inputs."
                )
        names: dict[str, Layer] = {}
        for call in calls:
            other = names.setdefault(call.layer.name, call.layer)
            if other is not call.layer:
                raise ArgumentError(
                    f'Two different layers in the model are named "{call.layer.name}"; layer names must be unique. Rename one.'
                )
        layers = keras_layer_order(inputs, calls, first_reached)
        check_weight_paths(layers)
        self.inputs, self.outputs, self._call_order, self._layer_order = list(inputs), list(outputs), calls, layers
        self._forget_plans()
        self._finish_compile()

    def _forget_plans(self) -> None:
        """Drop the traced graphs and the executors built from them (the structure or a trainable flag changed)."""
        self._graph_cache.clear()
        self._executor = None
        self._call_executors.clear()

    @Layer.trainable.setter
    def trainable(self, value) -> None:
        """Keras's: sets the flag of every layer in the model too (a frozen base model freezes its layers)."""
        Layer.trainable.fset(self, value)
        self._forget_plans()  # frozen parameters are part of the graph

    def _held_layers(self) -> list:
        return self.layers

    @property
    def built(self) -> bool:
        return bool(self.outputs)

    @built.setter
    def built(self, value) -> None:
        """A model is built once its inputs and outputs are known; Layer's code that sets the flag has nothing to set."""

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise NotBuiltError(
                f'Model "{self.name}" has no input shape yet, so {what} is not known. Give the first layer '
                "input_shape=... (or add kcomp.Input(shape=...)), call model.build(input_shape), or pass the "
                "model data first (fit, evaluate, predict or a call build it, as in Keras)."
            )

    @property
    def layers(self) -> list[Layer]:
        """The model's layers in Keras's order (deepest first: see keras_layer_order), InputLayers included;
        for a subclassed model, the layers it keeps as attributes, in the order they were set (as Keras)."""
        if self._subclassed:
            return list(self.__dict__.get("_sublayers", []))
        return list(self._layer_order)

    @property
    def _subclassed(self) -> bool:
        """A Keras-style subclassed model: `class M(Model)` with its own `call` over layers it keeps."""
        return type(self).call is not Layer.call

    @property
    def input(self):
        """The input tensor(s) as passed to Model(...)."""
        self._require_built("the input")
        return self._inputs_struct

    @property
    def output(self):
        """The output tensor(s) as passed to Model(...)."""
        self._require_built("the output")
        return self._outputs_struct

    def get_layer(self, name=None, index=None) -> Layer:
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ArgumentError(f"No layer named {name!r} in model {self.name!r}. Layers: {[l.name for l in self.layers]}.")

    @property
    def input_shape(self):
        self._require_built("the input shape")
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        self._require_built("the output shape")
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    # -- weights -----------------------------------------------------------------
    @property
    def weights(self):
        """The model's own weights (a subclassed model's add_weight), then each layer's in layer order;
        each weight once (a layer may sit in two nested models)."""
        seen: set[int] = set()
        everything = list(self._weights)
        for layer in self.layers:
            everything += layer.weights
        return [w for w in everything if not (id(w) in seen or seen.add(id(w)))]

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        seen: set[int] = set()
        everything = [*(w for w in self._weights if w.trainable), *(w for layer in self.layers for w in layer.trainable_weights)]
        return [w for w in everything if not (id(w) in seen or seen.add(id(w)))]

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        weights = list(weights)
        if len(weights) != len(self.weights):
            raise ArgumentError(f'Model "{self.name}" has {len(self.weights)} weights, received a list of {len(weights)}.')
        start = 0
        for layer in self.layers:
            n = len(layer.weights)
            layer.set_weights(weights[start : start + n])
            start += n

    def count_params(self) -> int:
        self._require_built("the parameter count")
        return sum(w.value.numel() for w in self.weights)  # each weight once, as Keras counts

    # -- the IR --------------------------------------------------------------------
    def to_graph(self, training: bool = False) -> Graph:
        """Trace the model into one IR graph (cached; weights are graph parameters)."""
        self._require_built("the graph")
        if training not in self._graph_cache:
            builder = GraphBuilder(self.name)
            outputs = self.trace_into(builder, training)
            self._graph_cache[training] = verify(builder.finish(outputs))
            self._executor = None
            self._call_executors.clear()
        return self._graph_cache[training]

    def trace_into(self, builder: GraphBuilder, training: bool) -> list:
        """Emit the model's forward nodes into `builder` (inputs named by their layers); returns the outputs.

        The training step builds on this: its loss, gradients and updates follow in the same builder.
        """
        inputs = [builder.input(t.ir_shape, t.dtype, t.call.layer.name) for t in self.inputs]
        return self._emit_calls(builder, inputs, training)

    def _emit_calls(self, builder: GraphBuilder, inputs: list, training: bool) -> list:
        """Emit every layer call on the IR values `inputs` (one per model input); returns the output values."""
        env: dict[int, object] = {id(t): v for t, v in zip(self.inputs, inputs, strict=True)}
        for call in self._call_order:
            if isinstance(call.layer, InputLayer):
                continue
            args = pack_like(call.inputs, [env[id(t)] for t in flatten(call.inputs)])
            result = call.layer.trace(builder, args, call.kwargs.get("training", training))
            for t, v in zip(flatten(call.outputs), flatten(result), strict=True):
                env[id(t)] = v
        if not self.trainable:  # Keras trains none of a frozen model's weights, whatever its layers' flags
            mine = [builder._param_by_key.get(w) for w in self.weights]
            builder.frozen_params.update(v.id for v in mine if v is not None)
        return [env[id(t)] for t in self.outputs]

    def trace(self, builder: GraphBuilder, inputs, training: bool = False):
        """The model as one layer of an outer model: its layers' nodes, emitted inline on `inputs`."""
        self._require_built("its output")
        values = traced_inputs(self, builder, flatten(inputs))
        outs = self._emit_calls(builder, values, training)
        return outs[0] if self._single_output else outs

    def params(self) -> dict[str, torch.Tensor]:
        """Current weight tensors by IR parameter name. predict_on_batch asks on every call, and walking
        the layers was 1.9 us of the seed MLP's ~36 us call: the list of weights is kept until the
        executor is rebuilt (a change of structure or trainable flag) or a weight is made; each
        weight's tensor is read every call (assign and set_weights may put in a new one)."""
        executor = self._executor
        if executor is None:
            return {w.path: w.value for w in self.weights}
        kept = self._weights_read_for  # (a weak reference to the executor, Variable.made, [(path, weight)])
        if kept is None or kept[0]() is not executor or kept[1] != Variable.made:
            # Weak: a dropped executor (with a GPU one, its device copies of the weights) is not kept alive here.
            kept = self._weights_read_for = (weakref.ref(executor), Variable.made, [(w.path, w) for w in self.weights])
        return {path: w.value for path, w in kept[2]}

    # -- compiling -----------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, backend="auto", precision="tf32", **kwargs):
        """Keras's compile; plus `backend` ("auto", "triton", "triton-interpret", "reference")
        and `precision` ("tf32" lets float32 matmuls use TF32 tensor cores on a GPU; "ieee" does not).

        The optimizer, loss and metrics are kept for training. A model without an input shape yet
        (Sequential() + add(...)) keeps them until the first data builds it, as Keras does: the
        optimizer is resolved now, the loss and metrics (which depend on the outputs) then.
        """
        from kcomp import optimizers
        from kcomp.runtime.executor import PRECISIONS, resolve_backend

        if precision not in PRECISIONS:
            raise ArgumentError(f"Received: precision={precision!r}. Expected one of {list(PRECISIONS)}.")
        unknown = sorted(set(kwargs) - set(KERAS_COMPILE_OPTIONS))
        if unknown:
            raise ArgumentError(f"compile() got unexpected argument(s) {unknown}; Keras's compile takes {sorted(KERAS_COMPILE_OPTIONS)}.")
        self._backend = resolve_backend(backend)
        self._precision = precision
        self._executor = None
        self._call_executors.clear()
        self.compile_settings = {"optimizer": optimizer, "loss": loss, "loss_weights": loss_weights, "metrics": metrics, **kwargs}
        self._training = None
        optimizer = optimizers.get(optimizer)
        if (kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16"
                and not isinstance(optimizer, optimizers.LossScaleOptimizer)):  # as Keras's compile
            optimizer = optimizers.LossScaleOptimizer(optimizer, name="loss_scale_optimizer")
        self._compile_args = (optimizer, loss, loss_weights, metrics, kwargs.get("weighted_metrics"))
        self._finish_compile()

    def _finish_compile(self) -> None:
        """Resolve compile's arguments against the outputs: at compile, or when the model gets built,
        or anew when layers are added or popped after compile (the old training steps are stale)."""
        self._training = None
        if self._compile_args is None or not self.built:
            return
        from kcomp.runtime.executor import check_backend
        from kcomp.training.loop import compile_settings

        optimizer, loss, loss_weights, metrics, weighted_metrics = self._compile_args
        check_backend(self._backend, self.to_graph(False))
        self._training = compile_settings(self, optimizer, loss, loss_weights, metrics, weighted_metrics) if loss is not None else None

    def build(self, input_shape=None) -> None:
        """Keras's build: a functional model is built by Model(inputs, outputs), so this does nothing;
        a subclassed model is built for inputs of this shape, `build((None, 784))` (a list for several)."""
        if not self._subclassed or self.built or input_shape is None:
            return
        several = isinstance(input_shape, list) and all(isinstance(s, (list, tuple)) for s in input_shape)
        shapes = input_shape if several else [input_shape]
        build_subclassed(self, [((None, *tuple(shape)[1:]), "float32") for shape in shapes], several)

    # -- training (kcomp/training/loop.py) ------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        """Keras's fit; returns a History."""
        from kcomp.training import loop

        x = self._ensure_built_for_data(x)
        return loop.fit(self, x, y, batch_size, epochs, verbose, callbacks, validation_split, validation_data,
                        shuffle, class_weight, sample_weight, initial_epoch, steps_per_epoch, validation_batch_size,
                        validation_steps=validation_steps, validation_freq=validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None,
                 return_dict=False):
        """Keras's evaluate: the loss (and metrics) over the data."""
        from kcomp.training import loop

        x = self._ensure_built_for_data(x)
        return loop.evaluate(self, x, y, batch_size, verbose, sample_weight, steps, return_dict, callbacks)

    def train_on_batch(self, x, y, sample_weight=None, return_dict=False):
        from kcomp.training import loop

        self._ensure_built_for(x)
        logs = loop.on_batch(self, "train", x, y, sample_weight)
        return logs if return_dict else loop.as_returned(self, logs)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        from kcomp.training import loop

        self._ensure_built_for(x)
        logs = loop.on_batch(self, "test", x, y, sample_weight)
        return logs if return_dict else loop.as_returned(self, logs)

    def predict_on_batch(self, x):
        if stream_of(x) is not None:  # a generator or PyDataset: its batches, as predict reads them
            return self.predict(x, verbose=0)
        self._ensure_built_for(x)
        self._require_built("the output")
        return prediction.predict_batch(self, x)

    @property
    def metrics_names(self) -> list[str]:
        """Keras 3's list: [] before compile; "loss"; "compile_metrics" when metrics were compiled;
        and, once a step has run on a model with several outputs, each output's "<name>_loss"."""
        if self._compile_args is None:
            return []
        _, loss, _, metrics, weighted_metrics = self._compile_args
        names = ["loss"] + (["compile_metrics"] if metrics or weighted_metrics else [])
        training = getattr(self, "_training", None)
        if training is not None and training.steps and len(self.outputs) > 1:
            from kcomp.training.step import output_names

            per_output = [f"{name}_loss" for name, l in zip(output_names(self), training.losses) if l is not None]
            names += per_output if len(per_output) > 1 else []
        return names

    @property
    def optimizer(self):
        if getattr(self, "_training", None) is not None:
            return self._training.optimizer
        return None if self._compile_args is None else self._compile_args[0]  # compiled, not built yet

    def save_weights(self, path) -> None:
        from kcomp.saving import save_weights

        distribution.on_writer(lambda: save_weights(self, path))  # a data-parallel job: process 0 writes

    def load_weights(self, path) -> None:
        from kcomp.saving import load_weights

        load_weights(self, path)

    # -- Keras files (kcomp/saving) ------------------------------------------------------
    def save(self, filepath) -> None:
        """Keras's model.save: a Keras 3 `.keras` archive (config, compile config, weights, optimizer state)."""
        from kcomp.saving.archive import save_model

        distribution.on_writer(lambda: save_model(self, filepath))  # a data-parallel job: process 0 writes

    def get_config(self) -> dict:
        """Keras's model config (a Sequential's layers, or a functional model's layers and inbound nodes)."""
        from kcomp.saving.serialization import get_model_config

        return get_model_config(self)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        from kcomp.saving.serialization import model_from_config

        if custom_objects:
            raise ArgumentError("kcomp builds models from its own classes only; custom_objects are not supported.")
        return model_from_config(config, cls=cls)

    def to_json(self, **kwargs) -> str:
        from kcomp.saving.serialization import to_json

        return to_json(self, **kwargs)

    @property
    def backend(self) -> str:
        return self._backend

    def executor(self):
        """The executor for predict (built on first use; the graph is traced once)."""
        if self._executor is None:
            self._executor = make_executor(self.to_graph(False), self._backend, self._precision)
        return self._executor

    # -- inference -----------------------------------------------------------------
    def _prepare_inputs(self, x) -> list[torch.Tensor]:
        """`x` as one tensor per input, checked against the inputs (kcomp/models/input_data.py)."""
        return prepare_inputs(self, x)

    def _ensure_built_for_data(self, x):
        """fit's, evaluate's and predict's data: a model that learns its input shape from data is
        built for it (for a generator or PyDataset, from its first batch's inputs). Returns `x`, a
        generator or PyDataset as its kcomp.training.streams.Stream, which keeps that batch."""
        stream = stream_of(x)
        self._ensure_built_for(x if stream is None or self.built else stream.first_x())
        return x if stream is None else stream

    def _ensure_built_for(self, x) -> None:
        """A model that learns its input shape from the first data: a subclassed one here, Sequential its own way."""
        if not self._subclassed or self.built:
            return
        build_subclassed(self, data_specs(x), isinstance(x, (list, tuple)))

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Run the model on `x` in batches of `batch_size` (default 32), or on the batches of a
        generator or PyDataset; returns numpy arrays."""
        x = self._ensure_built_for_data(x)
        self._require_built("the output")
        return prediction.predict(self, x, batch_size, verbose, steps, callbacks)

    def __call__(self, inputs, training=None, **kwargs):
        """On Input-derived tensors: the model becomes one layer of the model being built (its layers
        are traced inline, its weights shared). On data: runs the model on it as one batch and returns
        torch tensors, as Keras's torch backend does; `training=True` runs it in training mode
        (dropout active, batch statistics), without updating any weight."""
        if kwargs:
            raise ArgumentError(
                f'Model "{self.name}" was called with {sorted(kwargs)}; kcomp models take no call arguments '
                "other than training yet (no masks)."
            )
        if any(isinstance(t, KerasTensor) for t in flatten(inputs)):
            self._ensure_built_for_tensors(inputs)
            self._require_built("its output")
            return self._symbolic_call(inputs, training)
        self._ensure_built_for(inputs)
        self._require_built("the output")
        xs = self._prepare_inputs(inputs)
        if not training:
            with torch.inference_mode():
                outs = self.executor().run(xs, self.params())
            return outs[0] if len(outs) == 1 else outs
        return call_in_training_mode(self, xs)

    def _ensure_built_for_tensors(self, inputs) -> None:
        """Models that learn their input shape when first called on a tensor: a subclassed one here, Sequential its own way."""
        if self._subclassed and not self.built:
            flat = flatten(inputs)
            build_subclassed(self, [(t.shape, t.dtype) for t in flat], isinstance(inputs, (list, tuple)))

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False):
        from kcomp.models.summary import format_summary

        text = format_summary(self, line_length, expand_nested, show_trainable)
        (print_fn or print)(text)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"
