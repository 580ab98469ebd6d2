"""The GPU run's template cases (tests/gpu_cases.py) reach every kernel template, checked on any machine."""

from gpu_cases import CASES, templates_used

from kcomp.kernels.registry import TEMPLATES


def test_the_gpu_cases_use_every_kernel_template():
    used = set()
    for make in CASES.values():
        kinds = templates_used(make)
        used |= kinds["predict"] | kinds["train"]
    assert used == set(TEMPLATES), f"templates no GPU case runs: {sorted(set(TEMPLATES) - used)}"
