"""Core layers: Input, Dense, Dropout and the spatial dropouts, reshaping, Embedding, Masking (the activation
layers are in kcomp/layers/activation_layers.py)."""

import math

from kcomp import activations, initializers, ops, regularizers, session
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.ir.types import is_static
from kcomp.layers import args, masks
from kcomp.layers.base import Layer
from kcomp.layers.tensors import KerasTensor, LayerCall, symbolic_batch_shape


class InputLayer(Layer):
    """The entry of a functional model; `Input(...)` makes one and returns its tensor."""

    def __init__(self, shape=None, batch_size=None, dtype=None, batch_shape=None, name=None, input_shape=None, **kwargs):
        if shape is None and input_shape is not None:
            shape = input_shape
        if batch_shape is None:
            if shape is None:
                raise ArgumentError("Input needs a shape: Input(shape=(784,)) (the batch dimension is left out).")
            shape = (shape,) if isinstance(shape, int) else tuple(shape)
            batch_shape = (batch_size, *shape)
        batch_shape = tuple(batch_shape)
        for d in batch_shape[1:]:
            if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d <= 0):
                raise ArgumentError(f"Received: shape={batch_shape[1:]}. Expected positive integers or None.")
        super().__init__(name=name or session.unique_name("input_layer"), dtype=dtype, **kwargs)
        self.batch_shape = batch_shape
        self.built = True
        ir_shape = symbolic_batch_shape((None, *batch_shape[1:]))
        call = LayerCall(self, [], None)
        call.outputs = KerasTensor(ir_shape, self.dtype, call, 0, self.name)
        self._calls.append(call)  # its `output` is this tensor

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self.dtype, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, name=None, batch_shape=None):  # noqa: N802 - Keras's name
    """A symbolic input tensor: `x = Input(shape=(784,))`."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape, name=name).output


def _known_last_dim(layer, input_shape) -> int:
    last = input_shape[-1] if len(input_shape) else None
    if last is None:
        raise ShapeError(
            f'Layer "{layer.name}" ({type(layer).__name__}) needs the last dimension of its input to be known, '
            f"received input shape {format_shape(input_shape)}."
        )
    return last


class Dense(Layer):
    """output = activation(inputs @ kernel + bias), kernel of shape (input_dim, units)."""

    supports_masking = True  # Keras's Dense passes a sequence's mask on

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = args.positive_int("units", units)
        self.activation = activations.get(activation)
        self.use_bias = args.boolean("use_bias", use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = regularizers.get(activity_regularizer)
        args.no_constraint("kernel_constraint", kernel_constraint)
        args.no_constraint("bias_constraint", bias_constraint)

    def build(self, input_shape):
        in_dim = _known_last_dim(self, input_shape)
        self.kernel = self.add_weight(shape=(in_dim, self.units), initializer=self.kernel_initializer, regularizer=self.kernel_regularizer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer, regularizer=self.bias_regularizer, name="bias")

    def call(self, inputs):
        y = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            y = ops.bias_add(y, self.bias)
        return self.activation(y)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
        }


class Dropout(Layer):
    """Zeroes a `rate` fraction of inputs during training; the identity in inference."""

    supports_masking = True

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = args.rate("rate", rate)
        if noise_shape is not None:
            raise ArgumentError(f"Received: noise_shape={noise_shape!r}. kcomp's Dropout draws one mask element per input element; pass None.")
        self.noise_shape = None
        self.seed = seed

    def build(self, input_shape):
        # A fixed seed for the op, drawn from the global generator when none is
        # given. Drawn here, not in __init__, so the draws happen in build order
        # (as weights are), whatever order the layers were constructed in.
        self._op_seed = self.seed if self.seed is not None else session.draw_seed()

    def call(self, inputs, training=False):
        return ops.dropout(inputs, self.rate, self._op_seed, training=args.boolean("training", training))

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}


def sequence_dropout_mask(inputs, rate, seed):
    """Keras's mask for dropping whole channels of a sequence (batch, steps, channels): (batch, 1,
    channels) ones through dropout (the kept ones scaled by 1 / (1 - rate)), so once broadcast every
    step loses the same channels. SpatialDropout1D's mask, and the input-dropout mask Keras's
    recurrent cells draw (kcomp/layers/recurrent.py)."""
    return dropout_of_ones(first_step(inputs), rate, seed)


def first_step(inputs, axes=(1,)):
    """A tensor of the inputs' shape and dtype but 1 along `axes` (a sequence's (batch, 1, channels)):
    its first entry along each, or, with an axis unknown until run time, a reduction over it; for the
    shape only."""
    for axis in axes:
        if is_static(inputs.shape[axis]):
            inputs = ops.emit("slice", inputs, axis=axis, start=0, stop=1)
        else:
            inputs = ops.max(inputs, axis=axis, keepdims=True)
    return inputs


def dropout_of_ones(like, rate, seed):
    """Ones of `like`'s shape and dtype through dropout in training mode (each zeroed with
    probability `rate`, else 1 / (1 - rate)): a mask as Keras's layers draw them; ones at rate 0."""
    ones = ops.emit("broadcast_like", 1.0, like)  # a float32 constant, broadcast; `like` gives its shape only
    if ops.dtype(like) != "float32":
        ones = ops.cast(ones, ops.dtype(like))
    return ops.dropout(ones, rate, seed, training=True) if rate else ones


class SpatialDropout1D(Layer):
    """Dropout of whole channels: in training each (sample, channel) is zeroed at every step, or kept
    and scaled by 1 / (1 - rate) at every step; the identity in inference."""

    supports_masking = True  # a Dropout in Keras
    rank, what = 3, "sequences of shape (batch, steps, channels)"

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = args.rate("rate", rate)
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != self.rank:
            raise ShapeError(
                f'Layer "{self.name}" ({type(self).__name__}) expects {self.what}, '
                f"received input shape {format_shape(input_shape)}."
            )
        self._op_seed = self.seed if self.seed is not None else session.draw_seed()  # in build order, as Dropout's

    def call(self, inputs, training=False):
        if not (args.boolean("training", training) and self.rate):
            return ops.dropout(inputs, self.rate, self._op_seed, training=False)  # the identity
        # One draw per (sample, channel), the same at every step or pixel.
        mask = dropout_of_ones(first_step(inputs, range(1, self.rank - 1)), self.rate, self._op_seed)
        return ops.multiply(inputs, mask)

    def get_config(self):
        # Keras's config of a spatial dropout is these four (its __init__ takes nothing else).
        config = {"rate": self.rate, "seed": self.seed, "name": self.name, "dtype": self.dtype_policy.name}
        if self.batch_input_shape is not None:
            config["batch_input_shape"] = self.batch_input_shape
        return config


class SpatialDropout2D(SpatialDropout1D):
    """Dropout of whole feature maps of NHWC images: each (sample, channel) zeroed at every pixel,
    or kept and scaled by 1 / (1 - rate); the identity in inference."""

    rank, what = 4, "images of shape (batch, height, width, channels)"

    def __init__(self, rate, data_format=None, seed=None, **kwargs):
        super().__init__(rate, seed=seed, **kwargs)
        args.channels_last(data_format)
        self.data_format = "channels_last"

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


class Flatten(Layer):
    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        args.channels_last(data_format)
        self.data_format = data_format

    def call(self, inputs):
        return ops.reshape(inputs, (batch_dim(inputs), -1))

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


def batch_dim(x):
    """The batch size: its symbol while tracing ("N", or "N*5" for a batch TimeDistributed folded
    with 5 steps), the actual size when eager."""
    return x.shape[0]


class Reshape(Layer):
    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(target_shape, (list, tuple)):
            raise ArgumentError(f"Received: target_shape={target_shape!r}. Expected a tuple such as (4, 4), without the batch.")
        target_shape = tuple(target_shape)
        if not target_shape or any(not isinstance(d, int) or d == 0 or d < -1 for d in target_shape) or target_shape.count(-1) > 1:
            raise ArgumentError(f"Received: target_shape={target_shape}. Expected positive integers and at most one -1.")
        self.target_shape = target_shape

    def call(self, inputs):
        return ops.reshape(inputs, (batch_dim(inputs), *self.target_shape))

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


class Permute(Layer):
    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(dims, (list, tuple)):
            raise ArgumentError(f"Received: dims={dims!r}. Expected a tuple such as (2, 1), without the batch axis.")
        dims = tuple(dims)
        if sorted(dims) != list(range(1, len(dims) + 1)):
            raise ArgumentError(f"Received: dims={dims}. Expected a permutation of 1..{len(dims)} (axis 0 is the batch).")
        self.dims = dims

    def call(self, inputs):
        return ops.transpose(inputs, (0, *self.dims))

    def get_config(self):
        return {**super().get_config(), "dims": self.dims}


class Embedding(Layer):
    """Maps integer ids in [0, input_dim) to rows of a (input_dim, output_dim) table.

    With mask_zero=True the outputs carry Keras's mask, ids != 0: id 0 is padding (it still has a
    row; the vocabulary's words are 1 .. input_dim - 1, so input_dim is the vocabulary size + 1)."""

    input_dtype = "int32"  # a Sequential model whose first layer is this takes integer ids

    def __init__(
        self,
        input_dim,
        output_dim,
        embeddings_initializer="uniform",
        embeddings_regularizer=None,
        embeddings_constraint=None,
        mask_zero=False,
        input_length=None,
        **kwargs,
    ):
        if input_length is not None and not any(k in kwargs for k in ("input_shape", "batch_input_shape")):
            kwargs["input_shape"] = (input_length,)  # Keras 2: input_length gave the model its input shape
        super().__init__(**kwargs)
        self.input_dim = args.positive_int("input_dim", input_dim)
        self.output_dim = args.positive_int("output_dim", output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        args.no_constraint("embeddings_constraint", embeddings_constraint)
        self.mask_zero = args.boolean("mask_zero", mask_zero)
        self.supports_masking = self.mask_zero
        self.input_length = input_length

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            shape=(self.input_dim, self.output_dim), initializer=self.embeddings_initializer,
            regularizer=self.embeddings_regularizer, name="embeddings",
        )

    autocast = False  # Keras's: the rows are gathered from the table as kept, then cast

    def call(self, inputs):
        if ops.dtype(inputs) not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")  # Keras casts float ids too
        rows = ops.embedding(inputs, self.embeddings)
        return rows if ops.dtype(rows) == self.compute_dtype else ops.cast(rows, self.compute_dtype)

    def compute_mask(self, inputs, previous_mask=None):
        if not self.mask_zero:
            return None
        return masks.not_equal(inputs, 0)  # on the ids as given, as Keras (before its cast of float ids)

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
            "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
            "mask_zero": self.mask_zero,
            "input_length": self.input_length,
        }



class Masking(Layer):
    """Keras's Masking: a step whose features all equal `mask_value` is masked (skipped by the layers
    that read masks, left out of a pool's average and of the loss) and set to 0."""

    supports_masking = True

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = args.number("mask_value", mask_value)
        if not math.isfinite(self.mask_value):  # its masked steps are zeroed by multiplying them by 0
            raise ArgumentError(f"Received: mask_value={mask_value!r}. Expected a finite number.")

    def compute_mask(self, inputs, previous_mask=None):
        return masks.any_of(masks.not_equal(inputs, self.mask_value), axis=-1)

    def call(self, inputs):
        mask = self.compute_mask(inputs)
        keep = ops.reshape(mask, (*inputs.shape[:-1], 1))
        if ops.dtype(inputs) != "float32":
            keep = ops.cast(keep, ops.dtype(inputs))
        outputs = ops.multiply(inputs, keep)  # a masked step holds mask_value only: x * 0 is Keras's where(mask, x, 0)
        masks.attach(outputs, mask)  # as Keras's call sets it
        return outputs

    def get_config(self):
        return {**super().get_config(), "mask_value": self.mask_value}
