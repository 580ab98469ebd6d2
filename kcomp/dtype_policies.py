"""Keras 3's dtype policies: what a layer computes in and what it keeps its weights in.

A policy is named by a dtype ("float32", "float16", "bfloat16": both the same) or by
"mixed_float16" / "mixed_bfloat16" (compute in the 16-bit type, keep float32 weights). Each
layer has one (its `dtype=` argument: a name, a policy, or Keras's serialized policy dict;
None takes the global policy, which `set_dtype_policy` / `mixed_precision.set_global_policy`
set). As in Keras, a layer casts its floating-point inputs to its compute dtype, and while its
`call` runs every float weight it reads is cast to the compute dtype (the autocast scope
kept by kcomp.ops); the weights themselves stay in the variable dtype, so the optimizer
updates float32 master weights.
"""

import threading

from kcomp.errors import ArgumentError
from kcomp.ir.types import TORCH_DTYPES

MIXED = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
PLAIN = tuple(TORCH_DTYPES)  # as Keras, any dtype name (an Input of int32 ids has the policy "int32")
# Keras's serialized class names for a plain policy (FloatDTypePolicy is Keras 3.0-3.3's name).
CLASS_NAMES = ("DTypePolicy", "FloatDTypePolicy")

_global = threading.local()


class DTypePolicy:
    """Keras's DTypePolicy: `DTypePolicy("mixed_bfloat16").compute_dtype == "bfloat16"`."""

    def __init__(self, name=None):
        if name is None:
            name = dtype_policy().name
        if not isinstance(name, str):
            raise ArgumentError(
                f"'name' must be a string, such as 'mixed_float16'. Received: name={name!r} (of type {type(name).__name__})."
            )
        if name in MIXED:
            compute, variable = MIXED[name], "float32"
        elif name in PLAIN:
            compute = variable = name
        else:
            raise ArgumentError(
                f"Cannot convert {name!r} to a mixed precision DTypePolicy. Valid policies: 'mixed_float16', "
                f"'mixed_bfloat16' and the dtype names {list(PLAIN)}."
            )
        self._name, self._compute_dtype, self._variable_dtype = name, compute, variable

    @property
    def name(self) -> str:
        return self._name

    @property
    def compute_dtype(self) -> str:
        return self._compute_dtype

    @property
    def variable_dtype(self) -> str:
        return self._variable_dtype

    @property
    def quantization_mode(self):
        return None  # kcomp has no quantized policies

    @property
    def is_mixed(self) -> bool:
        return self._compute_dtype != self._variable_dtype

    def get_config(self) -> dict:
        return {"name": self._name}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.name == self.name

    def __hash__(self):
        return hash(self._name)

    def __repr__(self):
        return f'<DTypePolicy "{self._name}">'


Policy = DTypePolicy  # Keras's legacy name, kept in keras.mixed_precision


def get(identifier) -> DTypePolicy:
    """A policy from None (the global one), a name, a policy, or Keras's serialized form
    ({"module": "keras", "class_name": "DTypePolicy", "config": {"name": ...}})."""
    if identifier is None:
        return dtype_policy()
    if isinstance(identifier, DTypePolicy):
        return identifier
    if isinstance(identifier, str):
        return DTypePolicy(identifier)
    if isinstance(identifier, dict) and identifier.get("class_name") in CLASS_NAMES:
        return DTypePolicy((identifier.get("config") or {}).get("name"))
    raise ArgumentError(
        f"Received: dtype={identifier!r}. Expected a dtype policy name ('float32', 'mixed_bfloat16', ...), "
        "a DTypePolicy, or Keras's serialized DTypePolicy."
    )


def serialize(policy: DTypePolicy) -> dict:
    """Keras's serialized form, as a layer's get_config writes it in a .keras file."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": policy.get_config(), "registered_name": None}


def set_dtype_policy(policy) -> None:
    """Keras's keras.config.set_dtype_policy (mixed_precision.set_global_policy): the policy of
    layers made from now on without a dtype."""
    if policy is not None and not isinstance(policy, (str, DTypePolicy)):
        raise ArgumentError(f"Received: policy={policy!r}. Expected a policy name or a DTypePolicy.")
    _global.policy = None if policy is None else get(policy)


def dtype_policy() -> DTypePolicy:
    """The global policy (float32 unless set)."""
    policy = getattr(_global, "policy", None)
    if policy is None:
        policy = _global.policy = DTypePolicy("float32")
    return policy


set_global_policy = set_dtype_policy
global_policy = dtype_policy
