"""keras.mixed_precision: the global dtype policy and the loss-scaling optimizer.

    from kcomp import mixed_precision
    mixed_precision.set_global_policy("mixed_bfloat16")   # layers made from now on: bf16 compute, f32 weights

The policies are kcomp/dtype_policies.py's; LossScaleOptimizer is kcomp.optimizers'.
"""

from kcomp.dtype_policies import (  # noqa: F401  (Keras's names, re-exported)
    DTypePolicy, Policy, dtype_policy, global_policy, set_dtype_policy, set_global_policy,
)
from kcomp.optimizers.loss_scale import LossScaleOptimizer  # noqa: F401

__all__ = ["DTypePolicy", "LossScaleOptimizer", "Policy", "dtype_policy", "global_policy", "set_dtype_policy",
           "set_global_policy"]
