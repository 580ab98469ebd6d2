"""The Layer base class; weights are kcomp.variables.Variable, symbolic tensors (KerasTensor) are
kcomp/layers/tensors.py's.

A layer follows Keras's shape: `__init__` keeps the config, `build` makes the
weights once the input shape is known, `call` is written with kcomp.ops only,
and `get_config` round-trips through `from_config`.

Calling a layer on KerasTensors (the functional API) records a LayerCall and
returns new KerasTensors; their shapes come from tracing `call` into a scratch
graph, so every shape error surfaces at model-building time with the layer's
name. Calling it on arrays or torch tensors runs it at once.

Masks (kcomp/layers/masks.py) go round `call` as in Keras's Layer.__call__: the mask
travelling with the input goes to call's `mask` argument where it has one, and a layer that
supports masking gives its outputs the mask `compute_mask` returns (by default the input's);
a layer that does not drops it.
"""

import inspect
import threading
import warnings

import numpy as np

from kcomp import dtype_policies, initializers, regularizers, session
from kcomp.errors import ArgumentError, KcompError, NotBuiltError, NotCalledError, format_shape
from kcomp.ir.builder import GraphBuilder
from kcomp.ir.graph import Value
from kcomp.ir.types import DTYPE_OF_TORCH, FLOAT_DTYPES, TORCH_DTYPES
from kcomp.layers import masks
from kcomp.layers.tensors import KerasTensor, LayerCall, flatten, keras_shape, pack_like, to_tensor
from kcomp.ops import autocast, autocast_dtype, current_builder, tracing
from kcomp.ops import cast as ops_cast
from kcomp.ops import dtype as ops_dtype
from kcomp.variables import Variable

# The training flag of the layer being traced: a layer called inside another layer's `call`
# without a training argument inherits it, as Keras's call context passes it on.
_trace_state = threading.local()


def _written_by_keras(config: dict) -> bool:
    return any(isinstance(v, dict) and ("module" in v or v.get("class_name") == "DTypePolicy") for v in config.values())


MAX_WEIGHT_ELEMENTS = 2**31 - 1

_BASE_KWARGS = ("name", "trainable", "dtype", "input_shape", "input_dim", "batch_input_shape", "batch_size")


class Layer:
    # The dtype a model gets for inputs that feed this layer first (Embedding: int32).
    input_dtype = "float32"
    # Keras's supports_masking: whether the layer gives its outputs a mask (compute_mask). A layer
    # class that defines its own compute_mask supports masking, as in Keras.
    supports_masking = False
    # Attributes holding layers that are not this layer's own (a model's lists of its layers).
    _not_sublayers: frozenset = frozenset()
    # Keras's autocast: cast floating-point inputs to the compute dtype, and the float weights read
    # in `call` too (a layer that keeps float32 arithmetic, BatchNormalization, sets it False).
    autocast = True

    def __init__(
        self,
        name=None,
        trainable=True,
        dtype=None,
        input_shape=None,
        input_dim=None,
        batch_input_shape=None,
        batch_size=None,
        **unknown,
    ):
        if unknown:
            raise ArgumentError(
                f"{type(self).__name__} got unexpected keyword argument(s) {sorted(unknown)}. "
                f"Check the spelling against Keras's {type(self).__name__} arguments."
            )
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ArgumentError(f"Received: name={name!r}. Expected a non-empty string without '/'.")
        if name is not None:
            session.name_given(name)
        self.name = name or session.unique_name(session.to_snake_case(type(self).__name__))
        if not isinstance(trainable, bool):
            raise ArgumentError(f"Received: trainable={trainable!r}. Expected True or False.")
        self.trainable = trainable
        self._dtype_policy = dtype_policies.get(dtype)
        # Keras 2's ways of giving a first layer its input shape.
        self.batch_input_shape = None
        if batch_input_shape is not None:
            self.batch_input_shape = tuple(batch_input_shape)
        elif input_shape is not None:
            shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
            self.batch_input_shape = (batch_size, *shape)
        elif input_dim is not None:
            self.batch_input_shape = (batch_size, input_dim)
        self.built = False
        self._weights: list[Variable] = []  # Keras's order (add_weight)
        self._made_trainable = 0  # how many of them were made trainable: they come first
        self._calls: list[LayerCall] = []
        call_parameters = inspect.signature(self.call).parameters
        self._call_takes_training = "training" in call_parameters
        # Called on data without training=, a layer runs in its call's default mode (False, but
        # True for Keras's augmentation layers, whose eager calls augment).
        self._eager_training = self._call_takes_training and call_parameters["training"].default is True
        self._call_takes_mask = "mask" in call_parameters
        if type(self).compute_mask is not Layer.compute_mask and not self.supports_masking:
            self.supports_masking = True

    def __setattr__(self, name, value):
        # Keras tracks the layers a layer keeps as attributes (one layer, or a list of them): their
        # weights are its weights, its trainable flag is theirs.
        holds_layers = isinstance(value, Layer) or (
            isinstance(value, (list, tuple)) and value and all(isinstance(v, Layer) for v in value)
        )
        if holds_layers and name not in self._not_sublayers:
            tracked = self.__dict__.setdefault("_sublayers", [])
            for layer in value if isinstance(value, (list, tuple)) else [value]:
                if layer is not self and all(layer is not t for t in tracked):
                    tracked.append(layer)
        super().__setattr__(name, value)

    @property
    def trainable(self) -> bool:
        return self._trainable

    trainable_changes = 0  # how often any layer's trainable flag was set (a training step's cache key)

    @trainable.setter
    def trainable(self, value) -> None:
        if not isinstance(value, bool):
            raise ArgumentError(f"Received: trainable={value!r}. Expected True or False.")
        self._trainable = value
        Layer.trainable_changes += 1  # compiled training steps were built for the flags as they were
        for layer in self._held_layers():  # Keras: the flag of a layer is its layers' too
            layer.trainable = value

    # -- dtype policy (Keras 3: dtype is the variable dtype, compute_dtype what call computes in) --
    @property
    def dtype_policy(self) -> dtype_policies.DTypePolicy:
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value) -> None:
        self._dtype_policy = dtype_policies.get(value)

    @property
    def dtype(self) -> str:
        return self._dtype_policy.variable_dtype

    @property
    def variable_dtype(self) -> str:
        return self._dtype_policy.variable_dtype

    @property
    def compute_dtype(self) -> str:
        return self._dtype_policy.compute_dtype

    def _held_layers(self) -> list:
        """The layers this one holds: those it keeps as attributes."""
        return list(self.__dict__.get("_sublayers", []))

    # -- weights ---------------------------------------------------------------
    def add_weight(self, shape=None, initializer=None, dtype=None, trainable=True, regularizer=None, constraint=None,
                   name=None, autocast=True, aggregation="none", overwrite_with_gradient=False) -> Variable:
        """Keras 3's add_weight: `self.add_weight(shape=(n, units), initializer="zeros", name="w")`.

        The shape defaults to () and the initializer to glorot_uniform (zeros for
        integer weights); a weight without a name is called "variable" (then
        "variable_1", ...: kcomp's parameter names are unique within a model).
        """
        _check_super_called(self)
        if isinstance(shape, str):
            raise ArgumentError(
                f"`name` must be passed as a keyword argument. Received: add_weight({shape!r}, ...). "
                f"Use: add_weight(shape=..., name={shape!r})."
            )
        shape = () if shape is None else ((shape,) if isinstance(shape, int) else tuple(shape))
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0 for d in shape):
            raise ArgumentError(
                f'Layer "{self.name}" add_weight received shape={shape}; a weight\'s shape must be fully defined '
                "(non-negative integers, no None). Read unknown sizes from build's input_shape."
            )
        shape = tuple(int(d) for d in shape)
        dtype = dtype or self.variable_dtype
        if dtype not in TORCH_DTYPES:
            raise ArgumentError(f'Layer "{self.name}" add_weight received dtype={dtype!r}. Expected one of {sorted(TORCH_DTYPES)}.')
        if constraint is not None:
            raise ArgumentError(f"Received: constraint={constraint!r}. kcomp does not apply weight constraints yet; pass None.")
        if overwrite_with_gradient:
            raise ArgumentError("Received: overwrite_with_gradient=True. kcomp's optimizers always apply the update; pass False.")
        if initializer is None:
            initializer = "glorot_uniform" if dtype.startswith(("float", "bfloat")) else "zeros"
        init = initializers.get(initializer)
        if name is None:
            taken = {w.name for w in self._weights}
            name = next(n for n in ("variable", *(f"variable_{i}" for i in range(1, len(taken) + 2))) if n not in taken)
        size = 1
        for d in shape:
            size *= d
        if size > MAX_WEIGHT_ELEMENTS:
            raise ArgumentError(
                f'Layer "{self.name}" weight {name} of shape {format_shape(shape)} would hold {size:,} numbers; '
                f"kcomp indexes tensors with 32-bit offsets (at most {MAX_WEIGHT_ELEMENTS:,}). Use smaller layers."
            )
        value = init(shape, dtype=TORCH_DTYPES[dtype])
        var = Variable(value, name, f"{self.name}/{name}", bool(trainable), regularizers.get(regularizer))
        var.owner = self
        var.autocast = bool(autocast)
        # Keras's order, fixed when a weight is made: the ones made trainable first, then the others.
        if var.trainable:
            self._weights.insert(self._made_trainable, var)
            self._made_trainable += 1
        else:
            self._weights.append(var)
        return var

    @property
    def weights(self) -> list[Variable]:
        """Keras's order: the layer's own weights made trainable, then its other ones (each in creation
        order, whatever their flags now), then the weights of the layers it keeps as attributes; each weight once."""
        own = list(self._weights)
        sublayers = self.__dict__.get("_sublayers")
        if not sublayers:
            return own  # (most layers: no set to build; predict asks for every model weight per call)
        seen = {id(w) for w in own}
        for layer in sublayers:
            own += [w for w in layer.weights if not (id(w) in seen or seen.add(id(w)))]
        return own

    @property
    def trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if w.effectively_trainable and self.trainable]

    @property
    def non_trainable_weights(self) -> list[Variable]:
        return [w for w in self.weights if not (w.effectively_trainable and self.trainable)]

    def get_weights(self) -> list[np.ndarray]:
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights) -> None:
        weights, own = list(weights), self.weights
        if len(weights) != len(own):
            raise ArgumentError(
                f'Layer "{self.name}" has {len(own)} weights '
                f"({', '.join(w.name for w in own) or 'none'}), received a list of {len(weights)}."
            )
        for var, value in zip(own, weights):
            if tuple(np.shape(value)) != var.shape:
                raise ArgumentError(
                    f'Layer "{self.name}" weight {var.name} has shape {format_shape(var.shape)}, '
                    f"received {format_shape(tuple(np.shape(value)))}."
                )
        for var, value in zip(own, weights):
            var.assign(value)

    def count_params(self) -> int:
        if not self.built:
            raise NotBuiltError(
                f'Layer "{self.name}" is not built yet, so it has no weights to count. '
                "Call it on an input, or give the model an input shape."
            )
        return sum(w.value.numel() for w in self.weights)

    # -- to override -----------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create the weights for inputs of `input_shape` (None for unknown dims)."""
        self.built = True

    def call(self, inputs):
        raise NotImplementedError(f"{type(self).__name__}.call")

    def compute_mask(self, inputs, previous_mask):
        """Keras's: the mask of the outputs (None: no mask), from the inputs and their mask."""
        return previous_mask

    def get_config(self) -> dict:
        config = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_policy.name}
        if self.batch_input_shape is not None:
            config["batch_input_shape"] = self.batch_input_shape
        return config

    @classmethod
    def from_config(cls, config: dict):
        """A layer from its get_config(); or from Keras 3's config of the same layer class (which
        writes its dtype as a policy object and initializers with their module), read as kcomp
        reads Keras's files (kcomp/saving/serialization.py: Keras-only arguments at their defaults)."""
        from kcomp.saving.allow_list import LAYERS

        if LAYERS.get(cls.__name__) is cls and _written_by_keras(config):
            from kcomp.saving.serialization import layer_from_keras

            return layer_from_keras({"module": "keras.layers", "class_name": cls.__name__, "config": config})
        return cls(**config)

    # -- calling ---------------------------------------------------------------
    def _build_for(self, shapes) -> None:
        if not self.built:
            self.build(shapes)
            self.built = True

    def _invoke(self, inputs, training: bool, mask=None):
        kwargs = {}
        if self._call_takes_training:
            kwargs["training"] = training
        if self._call_takes_mask:
            kwargs["mask"] = mask
        return self.call(inputs, **kwargs)

    def _call_with_masks(self, inputs, training: bool, mask=None):
        """`call` with Keras's masks round it: the inputs' masks (or `mask`, given) to call's mask
        argument; then, if the layer supports masking, compute_mask's masks to the outputs that
        have none yet (a layer returning its input keeps the input's)."""
        if mask is None:
            mask = pack_like(inputs, [masks.mask_of(x) for x in flatten(inputs)])
        outputs = self._invoke(inputs, training, mask)
        if self.supports_masking:
            flat_outputs = flatten(outputs)
            if any(masks.mask_of(y) is None for y in flat_outputs):
                computed = self.compute_mask(inputs, mask)
                for y, m in zip(flat_outputs, flatten(computed) if computed is not None else []):
                    if masks.mask_of(y) is None:
                        masks.attach(y, m)
        elif any(m is not None for m in flatten(mask)) and not getattr(self, "_warned_mask", False):
            self._warned_mask = True
            warnings.warn(
                f"Layer '{self.name}' (of type {type(self).__name__}) was passed an input with a mask attached to it. "
                "However, this layer does not support masking and will therefore destroy the mask information. "
                "Downstream layers will not see the mask.", stacklevel=3,
            )
        return outputs

    def trace(self, builder: GraphBuilder, inputs, training: bool = False, mask=None):
        """Emit this layer's nodes into `builder`; `inputs` are IR Values (or a list). Their masks are
        read from the builder (or `mask` is theirs), its outputs' masks written there."""
        shapes = [keras_shape(v.shape) for v in flatten(inputs)]
        self._build_for(pack_like(inputs, shapes))
        return self._trace_call(builder, inputs, training, mask)

    def _trace_call(self, builder: GraphBuilder, inputs, training: bool, mask=None):
        """Emit `call` (the layer built): its nodes tagged with the layer's name, its training flag
        passed on to the layers it calls."""
        saved = getattr(_trace_state, "training", False)
        _trace_state.training = training
        try:
            with builder.scope(self.name), tracing(builder), autocast(self._autocast_scope()):
                return self._call_with_masks(self._convert_inputs(inputs), training, mask)
        finally:
            _trace_state.training = saved

    def _autocast_scope(self) -> str | None:
        """Keras's rule for the autocast scope `call` runs in: the compute dtype when the policy is
        mixed or an outer layer's scope is open (so a float32 layer inside a mixed model reads its
        weights in float32); none for a layer that does not autocast or computes in integers."""
        if not self.autocast or self.compute_dtype not in FLOAT_DTYPES:
            return None
        if autocast_dtype() is not None or self.compute_dtype != self.variable_dtype:
            return self.compute_dtype
        return None

    def _convert_inputs(self, inputs):
        """Keras's DTypePolicy.convert_input: floating-point inputs cast to the compute dtype (an
        autocast layer); integers untouched. Each cast keeps the mask of what it casts."""
        want = self.compute_dtype
        if not self.autocast:
            return inputs

        def convert(x):
            # (an eager call's tensor may be of a dtype the IR has not, uint8 pixels: left as it is)
            dtype = DTYPE_OF_TORCH.get(x.dtype) if hasattr(x, "is_floating_point") else ops_dtype(x)
            if dtype not in FLOAT_DTYPES or dtype == want:
                return x
            y = ops_cast(x, want)
            masks.attach(y, masks.mask_of(x))
            return y

        return pack_like(inputs, [convert(x) for x in flatten(inputs)])

    def __call__(self, inputs, training=None, mask=None, **kwargs):
        """Call on Input-derived tensors (records the call) or on data (runs it).

        `training=True` given here is kept with the call, as Keras keeps it
        (Monte Carlo dropout). A mask travels with the tensors (from Embedding(mask_zero=True) or
        Masking); `mask=` is taken on data (and inside another layer's call), not on Input-derived
        tensors. Other call arguments are not supported yet.
        """
        _check_super_called(self)
        if kwargs:
            raise ArgumentError(
                f'Layer "{self.name}" was called with {sorted(kwargs)}; kcomp layers do not take '
                "call arguments other than training and mask yet (no initial states)."
            )
        if mask is not None and not (self._call_takes_mask or self.supports_masking):
            raise ArgumentError(f'Layer "{self.name}" ({type(self).__name__}) takes no mask; call it without mask=.')
        flat = flatten(inputs)
        if any(isinstance(x, KerasTensor) for x in flat):
            if mask is not None:
                raise ArgumentError(
                    f'Layer "{self.name}" was called on Input-derived tensors with mask=...; in a kcomp model a mask '
                    "travels with the tensors (Embedding(mask_zero=True) or a Masking layer makes it). Drop mask=."
                )
            return self._symbolic_call(inputs, training)
        if any(isinstance(x, Value) for x in flat) and current_builder() is not None:
            # Called inside another layer's `call` while that layer is traced: emitted inline.
            mode = getattr(_trace_state, "training", False) if training is None else bool(training)
            out = self.trace(current_builder(), inputs, mode, mask)
            self._traced_output_shapes = [keras_shape(v.shape) for v in flatten(out)]  # for summary()
            return out
        if mask is None:  # Keras: a tensor's own mask (an eager Embedding(mask_zero=True) gave it one)
            mask = pack_like(inputs, [masks.mask_of(x) for x in flat])
        else:
            mask = pack_like(mask, [None if m is None else masks.as_mask(m) for m in flatten(mask)])
        tensors = [to_tensor(x) for x in flat]
        self._build_for(pack_like(inputs, [tuple(t.shape) for t in tensors]))
        with tracing(None), autocast(self._autocast_scope()):
            mode = self._eager_training if training is None else bool(training)
            return self._call_with_masks(self._convert_inputs(pack_like(inputs, tensors)), mode, mask)

    def _symbolic_call(self, inputs, training):
        flat = flatten(inputs)
        if not all(isinstance(x, KerasTensor) for x in flat):
            raise ArgumentError(
                f'Layer "{self.name}" got a mix of symbolic (Input-derived) and concrete inputs; '
                "wrap constants in a layer or pass them all as Inputs."
            )
        scratch = GraphBuilder(f"{self.name}_check")
        values = [scratch.input(kt.ir_shape, kt.dtype, f"in{i}") for i, kt in enumerate(flat)]
        for i, (kt, v) in enumerate(zip(flat, values)):
            if kt.mask_shape is not None:
                scratch.masks[v.id] = scratch.input(kt.mask_shape, "float32", f"in{i}_mask")
        try:
            out = self.trace(scratch, pack_like(inputs, values), bool(training))
        except KcompError as e:
            if str(e).startswith(f'Layer "{self.name}"'):
                raise  # the layer's own message already names it and the shapes
            shapes = " and ".join(format_shape(kt.shape) for kt in flat)
            raise type(e)(f'Layer "{self.name}" ({type(self).__name__}) cannot take input shape {shapes}: {e}') from None
        except TypeError as e:
            if "Value" not in str(e) and "traced model" not in str(e):
                raise
            raise ArgumentError(
                f'Layer "{self.name}" ({type(self).__name__}): its call did something kcomp cannot trace ({e}). '
                "Inside call the inputs are symbolic: write the computation with kcomp.ops (ops.add(x, y), "
                "ops.multiply(x, y), ops.matmul(x, w), ...); Python operators work where one side is a weight."
            ) from None
        outs_flat = flatten(out)
        call = LayerCall(self, inputs, None, {} if training is None else {"training": bool(training)})
        tensors = [
            KerasTensor(v.shape, v.dtype, call, i, f"{self.name}/out{i}" if len(outs_flat) > 1 else self.name,
                        mask_shape=scratch.masks[v.id].shape if v.id in scratch.masks else None)
            for i, v in enumerate(outs_flat)
        ]
        call.outputs = pack_like(out, tensors)
        self._calls.append(call)
        return call.outputs

    # -- where it was called (Keras: the first call's tensors) --------------------
    def _first_call(self, what: str) -> LayerCall:
        if not self._calls:
            raise NotCalledError(
                f'Layer "{self.name}" has never been called and thus has no defined {what}. Call it on a tensor '
                f"first (y = {self.name}(x)), or read the {what} of the model that holds it."
            )
        return self._calls[0]

    @property
    def input(self):
        """The tensor(s) this layer was first called on."""
        return _unwrap_single(self._first_call("input").inputs)

    @property
    def output(self):
        """The tensor(s) this layer's first call returned."""
        return _unwrap_single(self._first_call("output").outputs)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _check_super_called(layer) -> None:
    if "_calls" not in layer.__dict__:
        raise KcompError(
            f"{type(layer).__name__}.__init__ did not call super().__init__(); add super().__init__(**kwargs) "
            "at its start, as Keras requires."
        )


def _unwrap_single(structure):
    return structure[0] if isinstance(structure, (list, tuple)) and len(structure) == 1 else structure
