"""The GPUs AOT compiles for: each target's compute capability and shared-memory limit."""

from kcomp.errors import KcompError

# Target name -> compute capability. Triton compiles sm_90 as sm_90a (wgmma, TMA).
TARGETS = {"sm_80": 80, "sm_89": 89, "sm_90": 90}
# The most dynamic shared memory one block may ask for (the device's opt-in limit, which
# Triton checks at launch): A100 163 KiB, Ada 99 KiB, H100/H200 227 KiB.
SHARED_LIMITS = {"sm_80": 166912, "sm_89": 101376, "sm_90": 232448}


def compute_capability(target: str) -> int:
    if target not in TARGETS:
        raise KcompError(f"Received: target={target!r}. Expected one of {', '.join(TARGETS)}.")
    return TARGETS[target]
