"""kernels/trig.py's sin_cos under Triton's interpreter against float64 sin and cos (the ulps it
promises, the quadrants' signs, NaN and inf), and compiled for sm_90 without local memory (what it
replaced libdevice's sinf and cosf for)."""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from kcomp.kernels.trig import sin_cos


@triton.jit
def _sin_cos_kernel(X, SIN, COS, N, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    sin, cos = sin_cos(tl.load(X + offs, mask=mask))
    tl.store(SIN + offs, sin, mask=mask)
    tl.store(COS + offs, cos, mask=mask)


def sin_cos_of(x: torch.Tensor):
    sin, cos = torch.full_like(x, 7.0), torch.full_like(x, 7.0)  # poisoned: every element must be written
    _sin_cos_kernel[(triton.cdiv(x.numel(), 1024),)](x, sin, cos, x.numel(), BLOCK=1024)
    return sin, cos


def ulps(got: torch.Tensor, exact: torch.Tensor) -> float:
    """The worst |got - exact| in float32 ulps of the exact value."""
    ulp = torch.from_numpy(np.spacing(np.abs(exact.float().numpy()))).double()
    return ((got.double() - exact).abs() / ulp).max().item()


@pytest.mark.parametrize("radius", [0.8, 3.3, 40.0, 100.0])
def test_within_one_and_a_half_ulps_of_float64(radius):
    x = ((torch.rand(30011, dtype=torch.float64, generator=torch.Generator().manual_seed(int(radius))) * 2 - 1) * radius).float()
    sin, cos = sin_cos_of(x)
    assert ulps(sin, torch.sin(x.double())) <= 1.5
    assert ulps(cos, torch.cos(x.double())) <= 1.5


def test_large_angles_stay_within_1e_7_absolute():
    x = ((torch.rand(30011, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 2 - 1) * 6000).float()
    sin, cos = sin_cos_of(x)
    assert (sin.double() - torch.sin(x.double())).abs().max() < 1e-7
    assert (cos.double() - torch.cos(x.double())).abs().max() < 1e-7


def test_each_quadrant_has_its_signs_and_the_axes_their_values():
    quarter = torch.tensor(np.pi / 2, dtype=torch.float64)
    k = torch.arange(-8, 9, dtype=torch.float64)
    x = torch.cat([k * quarter, k * quarter + 0.3, k * quarter - 0.3]).float()  # on each axis and either side of it
    sin, cos = sin_cos_of(x)
    torch.testing.assert_close(sin.double(), torch.sin(x.double()), rtol=0, atol=2e-7)
    torch.testing.assert_close(cos.double(), torch.cos(x.double()), rtol=0, atol=2e-7)
    assert torch.equal(torch.sign(sin[17:]), torch.sign(torch.sin(x[17:].double())).float())
    assert torch.equal(torch.sign(cos[17:]), torch.sign(torch.cos(x[17:].double())).float())
    assert sin_cos_of(torch.zeros(1)) == (torch.zeros(1), torch.ones(1))


def test_nan_and_inf_give_nan():
    sin, cos = sin_cos_of(torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5]))
    assert sin[:3].isnan().all() and cos[:3].isnan().all() and sin[3].isfinite() and cos[3].isfinite()


def compile_for_sm_90(cases) -> list[dict]:
    """The kernel compiled for sm_90 (no GPU needed): whether its PTX keeps any local memory."""
    from triton.backends.compiler import GPUTarget

    source = triton.compiler.ASTSource(fn=_sin_cos_kernel, signature={"X": "*fp32", "SIN": "*fp32", "COS": "*fp32",
                                                                     "N": "i32", "BLOCK": "constexpr"},
                                       constexprs={"BLOCK": 1024})
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    return [{"case": case, "local_memory": ".local" in ptx or "ld.local" in ptx or "st.local" in ptx,
             "calls_libdevice_trig": "__nv_sinf" in ptx or "__nv_cosf" in ptx} for case in cases]


@pytest.mark.slow
def test_compiles_for_sm_90_without_local_memory(tmp_path):
    from aot_helpers import run_file_as_aot_child

    (record,) = run_file_as_aot_child(__file__, ["sin_cos"], tmp_path, timeout=300)
    assert record == {"case": "sin_cos", "local_memory": False, "calls_libdevice_trig": False}


if __name__ == "__main__":  # the AOT child: python tests/test_kernels_trig.py CASES_JSON ANSWER_PATH
    from aot_helpers import answer_aot_child

    answer_aot_child(compile_for_sm_90)
