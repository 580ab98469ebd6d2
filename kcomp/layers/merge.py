"""Layers that merge a list of tensors: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Masks as Keras merges them: the elementwise merges give the OR of their inputs' masks (none if
an input has none); Dot passes none on, as Keras's; Concatenate counts an input without a mask as unmasked everywhere. Maximum
Minimum and Multiply also read them, as Keras's: a masked entry does not take part (Maximum takes the
other inputs' values there, Multiply a 1, and zeros where every input is masked).
"""

from functools import reduce

from kcomp import ops
from kcomp.errors import ArgumentError, ShapeError, format_shape
from kcomp.layers import masks
from kcomp.layers.args import boolean as args_boolean
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
        """Keras's _apply_merge_op_and_or_mask: where an input is masked the running maximum (or
        minimum) is taken with the other side's value in its place."""
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
            output = self.combine(output, x)
        return output


class Minimum(Maximum):
    combine = staticmethod(ops.minimum)


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


class Dot(_Merge):
    """Keras's batch_dot of two tensors over one axis each (`axes`: an int for both, or a pair), the
    batch kept: (b, d) . (b, d) -> (b, 1); (b, n, d) . (b, m, d) with axes=2 -> (b, n, m); higher ranks
    keep x's other axes, then y's (b, n, k, d) . (b, d, m) with axes=(3, 1) -> (b, n, k, m). With
    normalize=True each input is L2-normalized along its axis first (cosine similarity)."""

    min_inputs = max_inputs = 2
    supports_masking = False  # Keras's Dot computes no output mask

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        pair = axes if isinstance(axes, (list, tuple)) else None
        if not (isinstance(axes, int) and not isinstance(axes, bool)) and not (
            pair is not None and len(pair) == 2 and all(isinstance(a, int) and not isinstance(a, bool) for a in pair)
        ):
            raise ArgumentError(f"Received: axes={axes!r}. Expected an int or a tuple of 2 ints.")
        self.axes = tuple(axes) if pair is not None else axes
        self.normalize = args_boolean("normalize", normalize)

    def compute_mask(self, inputs, previous_mask):
        return None

    def _axes_for(self, shapes):
        pair = self.axes if isinstance(self.axes, tuple) else (self.axes, self.axes)
        return [a % len(s) if a < 0 else a for a, s in zip(pair, shapes)]

    def build(self, input_shape):
        super().build(input_shape)
        a0, a1 = self._axes_for(input_shape)
        s0, s1 = input_shape
        if 0 in (a0, a1) or a0 >= len(s0) or a1 >= len(s1):
            raise ArgumentError(f"Received: axes={self.axes!r} for inputs of shapes {format_shape(s0)} and {format_shape(s1)}. "
                                "Expected an axis of each input other than 0 (the batch).")
        if s0[a0] != s1[a1]:
            raise ShapeError(f'Layer "{self.name}" (Dot): incompatible input shapes: axis values {s0[a0]} (at axis {a0}) != '
                             f"{s1[a1]} (at axis {a1}). Full input shapes: {format_shape(s0)}, {format_shape(s1)}.")

    def call(self, inputs):
        x, y = inputs
        a0, a1 = self._axes_for([x.shape, y.shape])
        if self.normalize:
            x, y = l2_normalize(x, a0), l2_normalize(y, a1)
        if len(x.shape) == 2 and len(y.shape) == 2:  # one sum of products per sample: a fused reduction
            return ops.sum(ops.multiply(x, y), axis=1, keepdims=True)
        return batch_dot(x, y, a0, a1)

    def get_config(self):
        return {**super().get_config(), "axes": self.axes, "normalize": self.normalize}


def _moved(x, axis, to):
    """x with `axis` moved to position `to`, the other axes in their order."""
    perm = [a for a in range(len(x.shape)) if a != axis]
    perm.insert(to % len(x.shape), axis)
    return x if perm == list(range(len(x.shape))) else ops.transpose(x, perm)


def batch_dot(x, y, a0, a1):
    """Keras's batch_dot (keras/src/layers/merging/dot.py): x's axis a0 moved last and its other
    axes merged into one, y's axis a1 moved first after the batch and its others merged, one batched
    matmul, the merged axes split again; a rank-2 input's added axis of 1 dropped."""
    x_rank, y_rank = len(x.shape), len(y.shape)
    batch = x.shape[0]
    x = ops.reshape(x, (batch, 1, x.shape[1])) if x_rank == 2 else _moved(x, a0, -1)
    y = ops.reshape(y, (batch, y.shape[1], 1)) if y_rank == 2 else _moved(y, a1, 1)
    x_mid, y_trail = tuple(x.shape[1:-1]), tuple(y.shape[2:])
    out = ops.matmul(ops.reshape(x, (batch, -1, x.shape[-1])), ops.reshape(y, (batch, y.shape[1], -1)))
    shape = (batch, *x_mid, *y_trail)
    if x_rank == 2:
        shape = (batch, *y_trail)
    elif y_rank == 2:
        shape = (batch, *x_mid)
    return out if tuple(out.shape) == shape else ops.reshape(out, shape)


def l2_normalize(x, axis, epsilon=1e-7):
    """Keras's ops.normalize(x, axis) (order 2): x * min(rsqrt(sum(x^2)), 1 / epsilon)."""
    inv_norm = ops.emit("rsqrt", ops.sum(ops.square(x), axis=axis, keepdims=True))
    return ops.multiply(x, ops.minimum(inv_norm, 1.0 / epsilon))
