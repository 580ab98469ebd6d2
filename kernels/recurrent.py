"""LSTM recurrence templates: every time step of a layer in one launch, forward and backward.

The input projection of every step (x @ kernel + bias) is one matmul before the launch
(kcomp/passes/decompose_recurrent.py); what is left is the loop over time, which no other
template can run without a launch per step. Each program owns BLOCK_B rows of the batch
and walks all the time steps with its h and c in registers:

    forward   z = xw_t + h @ U;  i, f, g, o = gates(z);  c = f c + i g;  h = o tanh(c)
    backward  from the gradients of h and c, back through the steps: dz_t, and
              dh = dz_t @ U^T for the step before

U (units, 4 * units) is read as four (units, units) tiles, one per gate. Where they fit in
registers (BLOCK_H <= ON_CHIP_MAX: 4 x 32 x 32 floats), they are loaded once before the loop
and stay on chip; larger ones are read every step (from L1/L2: the same few KB every step).
Units above SCAN_MAX_UNITS (kcomp/ir/ops/recurrent_scan.py) are not decomposed, so the
coarse lstm op runs them (a tiled kernel for them is still owed). The recurrent matmuls are tl.dot in `precision` (tf32 or ieee).
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.ops.recurrent_scan import SCAN_MAX_UNITS
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template

ON_CHIP_MAX = 32  # the largest BLOCK_H whose four recurrent tiles are loaded once, before the loop


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0  # tanh, from tl.sigmoid (available on every target)


@triton.jit
def _gate_tile(U, units, gate, TRANSPOSED: tl.constexpr, BLOCK_H: tl.constexpr):
    """U's columns of one gate as a (BLOCK_H, BLOCK_H) tile: tile[a, b] = U[a, gate*units + b],
    or transposed, U[b, gate*units + a] (for dz @ U^T); zeros outside units."""
    a = tl.arange(0, BLOCK_H)[:, None]
    b = tl.arange(0, BLOCK_H)[None, :]
    ok = (a < units) & (b < units)
    if TRANSPOSED:
        offs = b * (4 * units) + gate * units + a
    else:
        offs = a * (4 * units) + gate * units + b
    return tl.load(U + offs, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _tiles_on_chip(U, units, ON_CHIP: tl.constexpr, TRANSPOSED: tl.constexpr, BLOCK_H: tl.constexpr):
    """The four gates' tiles, loaded once before the time loop when they stay on chip (else
    zeros, unused: _times_gate reads each tile when it needs it)."""
    if ON_CHIP:
        return (_gate_tile(U, units, 0, TRANSPOSED, BLOCK_H), _gate_tile(U, units, 1, TRANSPOSED, BLOCK_H),
                _gate_tile(U, units, 2, TRANSPOSED, BLOCK_H), _gate_tile(U, units, 3, TRANSPOSED, BLOCK_H))
    unused = tl.zeros((BLOCK_H, BLOCK_H), dtype=tl.float32)  # the same type on both paths; dead code
    return unused, unused, unused, unused


@triton.jit
def _times_gate(x, U, units, gate, tile, ON_CHIP: tl.constexpr, TRANSPOSED: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_H: tl.constexpr):
    """x @ (one gate's tile of U): the tile loaded before the loop (ON_CHIP), or read here, just
    before its dot, so only one tile at a time takes registers."""
    if ON_CHIP:
        w = tile
    else:
        w = _gate_tile(U, units, gate, TRANSPOSED, BLOCK_H)
    return tl.dot(x, w, input_precision=PRECISION)


@triton.jit
def lstm_scan_kernel(
    XW, U, HSEQ, CSEQ, GATES, CLAST, n_batch, n_steps, units,
    SAVE: tl.constexpr, ON_CHIP: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_H)
    ok = (rows < n_batch)[:, None] & (cols < units)[None, :]
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units + cols[None, :]  # (row, step 0, gate 0, col)
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    u_i, u_f, u_g, u_o = _tiles_on_chip(U, units, ON_CHIP, False, BLOCK_H)
    h = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    c = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for t in range(0, n_steps):
        z = XW + gate_rows + t * 4 * units
        z_i = tl.load(z, mask=ok, other=0.0).to(tl.float32) + _times_gate(h, U, units, 0, u_i, ON_CHIP, False, PRECISION, BLOCK_H)
        z_f = tl.load(z + units, mask=ok, other=0.0).to(tl.float32) + _times_gate(h, U, units, 1, u_f, ON_CHIP, False, PRECISION, BLOCK_H)
        z_g = tl.load(z + 2 * units, mask=ok, other=0.0).to(tl.float32) + _times_gate(h, U, units, 2, u_g, ON_CHIP, False, PRECISION, BLOCK_H)
        z_o = tl.load(z + 3 * units, mask=ok, other=0.0).to(tl.float32) + _times_gate(h, U, units, 3, u_o, ON_CHIP, False, PRECISION, BLOCK_H)
        i, f, g, o = tl.sigmoid(z_i), tl.sigmoid(z_f), _tanh(z_g), tl.sigmoid(z_o)
        c = tl.where(ok, f * c + i * g, 0.0)  # columns past units stay zero: they feed the next dot
        h = tl.where(ok, o * _tanh(c), 0.0)
        tl.store(HSEQ + seq_rows + t * units, h.to(HSEQ.dtype.element_ty), mask=ok)
        if SAVE:
            tl.store(CSEQ + seq_rows + t * units, c.to(CSEQ.dtype.element_ty), mask=ok)
            saved = GATES + gate_rows + t * 4 * units
            tl.store(saved, i.to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + units, f.to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + 2 * units, g.to(GATES.dtype.element_ty), mask=ok)
            tl.store(saved + 3 * units, o.to(GATES.dtype.element_ty), mask=ok)
    if not SAVE:
        tl.store(CLAST + rows[:, None].to(tl.int64) * units + cols[None, :], c.to(CLAST.dtype.element_ty), mask=ok)


@triton.jit
def lstm_scan_grad_kernel(
    U, CSEQ, GATES, DSEQ, DH, DC, DZ, n_batch, n_steps, units,
    HAS_DSEQ: tl.constexpr, HAS_DH: tl.constexpr, HAS_DC: tl.constexpr, ON_CHIP: tl.constexpr,
    PRECISION: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_H)
    ok = (rows < n_batch)[:, None] & (cols < units)[None, :]
    gate_rows = rows[:, None].to(tl.int64) * n_steps * 4 * units + cols[None, :]
    seq_rows = rows[:, None].to(tl.int64) * n_steps * units + cols[None, :]
    last = rows[:, None].to(tl.int64) * units + cols[None, :]
    ut_i, ut_f, ut_g, ut_o = _tiles_on_chip(U, units, ON_CHIP, True, BLOCK_H)
    if HAS_DH:
        dh_next = tl.load(DH + last, mask=ok, other=0.0).to(tl.float32)
    else:
        dh_next = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    if HAS_DC:
        dc_next = tl.load(DC + last, mask=ok, other=0.0).to(tl.float32)
    else:
        dc_next = tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)
    for s in range(0, n_steps):
        t = n_steps - 1 - s
        dh = dh_next
        if HAS_DSEQ:
            dh += tl.load(DSEQ + seq_rows + t * units, mask=ok, other=0.0).to(tl.float32)
        saved = GATES + gate_rows + t * 4 * units
        i = tl.load(saved, mask=ok, other=0.0).to(tl.float32)
        f = tl.load(saved + units, mask=ok, other=0.0).to(tl.float32)
        g = tl.load(saved + 2 * units, mask=ok, other=0.0).to(tl.float32)
        o = tl.load(saved + 3 * units, mask=ok, other=0.0).to(tl.float32)
        c = tl.load(CSEQ + seq_rows + t * units, mask=ok, other=0.0).to(tl.float32)
        has_prev = (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + t) > 0  # c_0 = 0 (a tensor mask: t may be a Python int)
        c_prev = tl.load(CSEQ + seq_rows + (t - 1) * units, mask=ok & has_prev, other=0.0).to(tl.float32)
        tanh_c = _tanh(c)
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz_i = tl.where(ok, dc * g * i * (1.0 - i), 0.0)
        dz_f = tl.where(ok, dc * c_prev * f * (1.0 - f), 0.0)
        dz_g = tl.where(ok, dc * i * (1.0 - g * g), 0.0)
        dz_o = tl.where(ok, dh * tanh_c * o * (1.0 - o), 0.0)
        out = DZ + gate_rows + t * 4 * units
        tl.store(out, dz_i.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + units, dz_f.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + 2 * units, dz_g.to(DZ.dtype.element_ty), mask=ok)
        tl.store(out + 3 * units, dz_o.to(DZ.dtype.element_ty), mask=ok)
        dc_next = dc * f
        dh_next = _times_gate(dz_i, U, units, 0, ut_i, ON_CHIP, True, PRECISION, BLOCK_H)
        dh_next += _times_gate(dz_f, U, units, 1, ut_f, ON_CHIP, True, PRECISION, BLOCK_H)
        dh_next += _times_gate(dz_g, U, units, 2, ut_g, ON_CHIP, True, PRECISION, BLOCK_H)
        dh_next += _times_gate(dz_o, U, units, 3, ut_o, ON_CHIP, True, PRECISION, BLOCK_H)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LstmScanBinding(Binding):
    xw: int  # which input holds the projected inputs (batch, time, 4 * units)
    recurrent: int  # which holds U (units, 4 * units)
    save: bool  # every c_t and the gates too (for the backward), else the last c
    # Per output of lstm_scan (every h_t, then the last c or every c_t and the gates): its position
    # among the kernel's outputs, or None where nothing reads it (the kernel writes scratch).
    outputs: tuple[int | None, ...]


@dataclass(frozen=True, kw_only=True)
class LstmScanGradBinding(Binding):
    recurrent: int  # which input holds U,
    c_seq: int  # every c_t,
    gates: int  # the saved gates,
    d_seq: int | None  # the gradients of every h_t (None: none arrive),
    d_h: int | None  # of the last h,
    d_c: int | None  # and of the last c


@dataclass
class ScanCall(Call):
    tensors: tuple  # the kernel's tensor arguments, in its order
    n_batch: int
    n_steps: int
    units: int
    precision: str


def _candidates(call, interpret: bool) -> list[dict]:
    block_h = max(16, next_power_of_2(call.units))  # tl.dot takes tiles of 16 and more
    if interpret:
        return [dict(BLOCK_B=16, BLOCK_H=block_h, num_warps=4)]
    # Few programs however the batch is split (one per BLOCK_B rows): smaller blocks give the
    # GPU more of them; larger ones fewer, longer dots. Wider tiles take more warps, so each
    # thread's share of h, c, the gates and the tiles fits its registers (measured for sm_90:
    # BLOCK_H 64 with 2 warps spills 896 bytes, with 4 warps 16 bytes, with 8 none).
    warps = (2, 4) if block_h <= ON_CHIP_MAX else (8, 4)
    return [dict(BLOCK_B=b, BLOCK_H=block_h, num_warps=w) for b in (16, 32, 64) for w in warps]


def _options(config: dict) -> dict:
    return dict(ON_CHIP=config["BLOCK_H"] <= ON_CHIP_MAX, BLOCK_B=config["BLOCK_B"], BLOCK_H=config["BLOCK_H"],
                num_warps=config["num_warps"])


def _sizes(t: torch.Tensor, units: int) -> tuple[int, int, int]:
    if units > SCAN_MAX_UNITS:
        raise TypeError(f"lstm_scan kernels: {units} units; they hold at most {SCAN_MAX_UNITS} in registers")
    return t.shape[0], t.shape[1], units


def launch_scan(binding: LstmScanBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the projected inputs and U contiguous, float32 arithmetic whatever they hold
    xw, u = inputs[binding.xw].contiguous(), inputs[binding.recurrent].contiguous()
    n, steps, units = _sizes(xw, u.shape[0])
    # allocate: every h_t, then the last c, or every c_t and the gates (those nothing reads: scratch)
    shapes = ((n, steps, units), (n, steps, units), xw.shape) if binding.save else ((n, steps, units), (n, units))
    kept = [position for position in binding.outputs if position is not None]
    if out is None:
        allocated = tuple(torch.empty(shapes[binding.outputs.index(k)], device=xw.device, dtype=xw.dtype) for k in kept)
        out = allocated[0] if len(allocated) == 1 else allocated
    given = (out,) if len(kept) == 1 else out
    buffers = [given[k] if k is not None else torch.empty(shape, device=xw.device, dtype=xw.dtype)
               for k, shape in zip(binding.outputs, shapes, strict=True)]
    if binding.save:
        h_seq, c_seq, gates = buffers
        tensors = (xw, u, h_seq, c_seq, gates, h_seq)  # CLAST unused: the last c is c_seq's
    else:
        h_seq, c_last = buffers
        tensors = (xw, u, h_seq, h_seq, xw, c_last)  # CSEQ and GATES unused (never written)
    run_scan(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(_candidates)
def run_scan(call: ScanCall, config: dict):
    lstm_scan_kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units,
        SAVE=call.binding.save, PRECISION=call.precision, **_options(config),
    )


def launch_scan_grad(binding: LstmScanGradBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: U, every c_t, the gates and the gradients present, contiguous (an absent one: never read)
    u, c_seq, gates = (inputs[i].contiguous() for i in (binding.recurrent, binding.c_seq, binding.gates))
    d_seq, d_h, d_c = (gates if i is None else inputs[i].contiguous() for i in (binding.d_seq, binding.d_h, binding.d_c))
    n, steps, units = _sizes(gates, u.shape[0])
    # allocate: the gradient of every step's gates
    if out is None:
        out = torch.empty_like(gates)
    tensors = (u, c_seq, gates, d_seq, d_h, d_c, out)
    run_scan_grad(ScanCall(binding, inputs, out, tensors, n, steps, units, precision), config, interpret)
    return out


@tuned(_candidates)
def run_scan_grad(call: ScanCall, config: dict):
    b = call.binding
    lstm_scan_grad_kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units,
        HAS_DSEQ=b.d_seq is not None, HAS_DH=b.d_h is not None, HAS_DC=b.d_c is not None, PRECISION=call.precision,
        **_options(config),
    )


# --- grouping: how the fusion pass forms these templates' kernels -------------------------------
def _group_scan(fusion, node):
    return Group(node) if node.op == "lstm_scan" else None


def _group_scan_grad(fusion, node):
    return Group(node) if node.op == "lstm_scan_grad" else None


TEMPLATES = (
    Template("lstm_scan", launch_scan, LstmScanBinding, group=_group_scan, priority=72, tensor_cores=True),
    Template("lstm_scan_grad", launch_scan_grad, LstmScanGradBinding, group=_group_scan_grad, priority=73,
             tensor_cores=True),
)
