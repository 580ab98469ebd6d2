"""Layers that merge a list of tensors: Add, Subtract, Multiply, Average, Maximum, Concatenate.

Masks as Keras merges them: the elementwise merges give the OR of their inputs' masks (none if
an input has none); Concatenate counts an input without a mask as unmasked everywhere.
"""

from functools import reduce

from kcomp import ops
from kcomp.errors import ArgumentError
from kcomp.layers import masks
from kcomp.layers.base import Layer


class _Merge(Layer):
    min_inputs, max_inputs = 2, None
    supports_masking = True

    def compute_mask(self, inputs, previous_mask):
        if previous_mask is None or any(m is None for m in previous_mask):
            return None
        return reduce(masks.logical_or, previous_mask)

    def build(self, input_shape):
        shapes = input_shape if isinstance(input_shape, list) else [input_shape]
        if not isinstance(input_shape, list) or len(shapes) < self.min_inputs or (self.max_inputs and len(shapes) > self.max_inputs):
            count = f"exactly {self.max_inputs}" if self.max_inputs == self.min_inputs else f"at least {self.min_inputs}"
            raise ArgumentError(f'Layer "{self.name}" ({type(self).__name__}) takes a list of {count} tensors, received {len(shapes) if isinstance(input_shape, list) else "one tensor"}.')

    def call(self, inputs):
        return reduce(self.combine, inputs)


class Add(_Merge):
    combine = staticmethod(ops.add)


class Subtract(_Merge):
    min_inputs = max_inputs = 2
    combine = staticmethod(ops.subtract)


class Multiply(_Merge):
    combine = staticmethod(ops.multiply)


class Maximum(_Merge):
    combine = staticmethod(ops.maximum)


class Average(_Merge):
    def call(self, inputs):
        return ops.multiply(reduce(ops.add, inputs), 1.0 / len(inputs))


class Concatenate(_Merge):
    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis

    def call(self, inputs):
        return ops.concatenate(inputs, axis=self.axis)

    def compute_mask(self, inputs, previous_mask):
        """Keras's: each input's mask spread over its shape (ones where it has none), concatenated
        as the inputs are, then any() over the last axis."""
        if previous_mask is None or all(m is None for m in previous_mask):
            return None
        spread = []
        for x, m in zip(inputs, previous_mask):
            if m is None:
                m = ops.emit("broadcast_like", 1.0, x)
            elif len(m.shape) < len(x.shape):
                m = ops.emit("broadcast_like", ops.reshape(m, (*m.shape, 1)), x)
            spread.append(m if ops.dtype(m) == "float32" else ops.cast(m, "float32"))
        return masks.any_of(ops.concatenate(spread, axis=self.axis), axis=-1)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
