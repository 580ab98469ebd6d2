"""PlanExecutor's copies of the weights on its device (kcomp/runtime/executor.py)."""

import torch

from kcomp.layers import Dense, Input
from kcomp.models import Sequential
from kcomp.runtime.executor import PlanExecutor
from kcomp.runtime.versions import contents_key


def test_weights_copied_during_predict_keep_their_version_counters():
    """predict runs under torch.inference_mode. The weights it copies to a GPU must still be ordinary
    tensors: the plan keys its weight-only values by their versions, and an inference tensor has none
    (on the H200, 2026-12-04, every example's GPU predict failed so). The copy to another device is
    made here to the meta device, since on the CPU `.to` returns the weights themselves."""
    model = Sequential([Input(shape=(3,)), Dense(4, activation="relu")])
    executor = PlanExecutor(model.to_graph(), "triton-interpret")
    executor.device = torch.device("meta")
    params = model.params()
    with torch.inference_mode():
        copies = executor._device_params(params)
        assert all(t.device.type == "meta" and not t.is_inference() for t in copies.values())
        contents_key(copies.values())  # raised "Inference tensors do not track version counter"
        assert executor._device_params(params) is copies  # unchanged weights: the same copies
