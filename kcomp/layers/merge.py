"""Layers that merge a list of tensors: Add, Subtract, Multiply, Average, Maximum, Concatenate.

Masks as Keras merges them: the elementwise merges give the OR of their inputs' masks (none if
an input has none); Concatenate counts an input without a mask as unmasked everywhere. Maximum
and Multiply also read them, as Keras's: a masked entry does not take part (Maximum takes the
other inputs' values there, Multiply a 1, and zeros where every input is masked).
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

    def call(self, inputs, mask=None):
        """Keras's Multiply._merge_function: masked entries count as 1; if every input has a mask,
        entries masked in all of them are 0."""
        if mask is None or all(m is None for m in mask):
            return super().call(inputs)
        output = every_mask = None
        for x, m in zip(inputs, mask):
            if m is not None:
                m = masks.per_feature(m, x)
                x = masks.select(m, x, 1.0)
                every_mask = m if every_mask is None else masks.logical_or(every_mask, m)
            output = x if output is None else ops.multiply(output, x)
        return ops.multiply(output, every_mask) if all(m is not None for m in mask) else output


class Maximum(_Merge):
    combine = staticmethod(ops.maximum)

    def call(self, inputs, mask=None):
        """Keras's _apply_merge_op_and_or_mask: where an input is masked the running maximum is taken
        with the other side's value in its place."""
        if mask is None or all(m is None for m in mask):
            return super().call(inputs)
        output, output_mask = inputs[0], None if mask[0] is None else masks.per_feature(mask[0], inputs[0])
        for x, m in zip(inputs[1:], mask[1:]):
            m = None if m is None else masks.per_feature(m, x)
            if m is not None:
                x = masks.select(m, x, output)
            if output_mask is not None:
                output = masks.select(output_mask, output, x)
            output_mask = masks.logical_or(output_mask, m) if m is not None and output_mask is not None else None
            output = ops.maximum(output, x)
        return output


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
