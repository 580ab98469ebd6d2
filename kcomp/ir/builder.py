"""GraphBuilder: the one way graphs are made (by tracing layers, by the DSL, by passes).

`emit` checks the op's attributes against its registry record, runs its shape
rule and appends an immutable Node, so every graph a builder makes is
well-typed by construction.
"""

from contextlib import contextmanager
from typing import Any

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.registry import get_op
from kcomp.ir.types import BATCH, check_dtype, fresh_symbol


class GraphBuilder:
    def __init__(self, name: str = "graph"):
        self.name = name
        self._next_id = 0
        self.inputs: list[Value] = []
        self.params: list[Value] = []
        self.frozen_params: set[int] = set()
        self.nodes: list[Node] = []
        self._param_by_key: dict[Any, Value] = {}
        self._random_calls: dict[int, int] = {}  # seed -> random ops emitted with it so far
        # What random ops count draws by, so each run draws anew: the step number in a training step,
        # the call number in model(x, training=True); None (a forward graph): nothing random is drawn.
        self.rng_counter: Value | None = None
        self.origin = ""
        # Keras's masks of the values traced so far: value id -> its 0/1 mask value (kcomp/layers/masks.py).
        self.masks: dict[int, Value] = {}
        # (moving statistic, batch statistic) of each synchronized BatchNormalization traced in training,
        # whose batch statistics are no batch_norm_train node's outputs (kcomp.training.step.moving_statistics).
        self.batch_statistics: list[tuple[Value, Value]] = []

    def _new_value(self, shape, dtype, name="") -> Value:
        v = Value(self._next_id, tuple(shape), check_dtype(dtype), name)
        self._next_id += 1
        return v

    def input(self, shape, dtype: str, name: str) -> Value:
        """A data input; None dims become the batch symbol (axis 0) or fresh symbols."""
        dims = []
        for axis, d in enumerate(shape):
            if d is None:
                d = BATCH if axis == 0 else fresh_symbol()
            dims.append(d)
        v = self._new_value(dims, dtype, name)
        self.inputs.append(v)
        return v

    def param(self, key: Any, shape, dtype: str, name: str, trainable: bool = True) -> Value:
        """A weight, created once per `key` (the weight object) and shared after."""
        if key in self._param_by_key:
            return self._param_by_key[key]
        v = self._new_value(shape, dtype, name)
        self.params.append(v)
        if not trainable:
            self.frozen_params.add(v.id)
        self._param_by_key[key] = v
        return v

    def random_seed(self, seed: int) -> int:
        """The seed for this graph's next random op drawn with `seed`. The first keeps it; later
        ones (one Dropout layer called twice in a model) get seeds derived from it and their call
        number, so each call draws its own mask, as Keras's seed generator advances per call."""
        from kcomp.random import derived_seed

        call = self._random_calls.get(seed, 0)
        self._random_calls[seed] = call + 1
        return seed if call == 0 else derived_seed(seed, call)

    @contextmanager
    def scope(self, origin: str):
        """Tag every node emitted inside with `origin` (a layer name)."""
        saved, self.origin = self.origin, origin
        try:
            yield
        finally:
            self.origin = saved

    def emit(self, op: str, inputs, **attrs) -> tuple[Value, ...]:
        """Append one node; returns its output values."""
        opdef = get_op(op)
        inputs = tuple(inputs)
        opdef.check_arity(len(inputs))
        attrs = opdef.resolve_attrs(attrs)
        specs = opdef.infer([v.spec for v in inputs], **attrs)
        if opdef.num_outputs is not None and len(specs) != opdef.num_outputs:
            raise AssertionError(f"{op}: shape rule returned {len(specs)} outputs, record says {opdef.num_outputs}")
        outputs = tuple(self._new_value(s.shape, s.dtype) for s in specs)
        self.nodes.append(Node(op, inputs, tuple(sorted(attrs.items())), outputs, self.origin))
        return outputs

    def emit1(self, op: str, inputs, **attrs) -> Value:
        (out,) = self.emit(op, inputs, **attrs)
        return out

    def finish(self, outputs, kind: str = "forward") -> Graph:
        return Graph(
            self.name,
            tuple(self.inputs),
            tuple(self.params),
            tuple(self.nodes),
            tuple(outputs),
            frozenset(self.frozen_params),
            kind,
        )

