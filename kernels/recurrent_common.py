"""What the recurrence templates share: the LSTM's (recurrent.py), the GRU's (recurrent_gru.py)
and SimpleRNN's (recurrent_simple_rnn.py). Not a template module (no TEMPLATES).

Each template's program owns BLOCK_B rows of the batch and walks every time step with its state
in registers; the recurrent kernel U (units, GATES * units) is read as one (units, units) tile per
gate. Where a template's tiles fit in registers (BLOCK_H <= its on-chip limit) they are loaded
once before the loop and stay on chip; larger ones are read every step, just before their dot
(from L1/L2: the same few KB every step), so one tile at a time takes registers. The launches
share their call record, block-size candidates and output buffers.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.kernels import recurrent_activations as default_hooks
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group

ON_CHIP_MAX = 32  # the LSTM's and GRU's: the largest BLOCK_H whose gate tiles are loaded once, before the loop


@triton.jit
def gate_tile(U, units, gate, GATES: tl.constexpr, TRANSPOSED: tl.constexpr, BLOCK_H: tl.constexpr):
    """U's columns of one gate as a (BLOCK_H, BLOCK_H) tile: tile[a, b] = U[a, gate*units + b],
    or transposed, U[b, gate*units + a] (for dz @ U^T); zeros outside units."""
    a = tl.arange(0, BLOCK_H)[:, None]
    b = tl.arange(0, BLOCK_H)[None, :]
    ok = (a < units) & (b < units)
    if TRANSPOSED:
        offs = b * (GATES * units) + gate * units + a
    else:
        offs = a * (GATES * units) + gate * units + b
    return tl.load(U + offs, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def tile_before_loop(U, units, gate, GATES: tl.constexpr, ON_CHIP: tl.constexpr, TRANSPOSED: tl.constexpr,
                     BLOCK_H: tl.constexpr):
    """One gate's tile, loaded once before the time loop when the tiles stay on chip (else zeros,
    unused: times_gate reads the tile when it needs it)."""
    if ON_CHIP:
        return gate_tile(U, units, gate, GATES, TRANSPOSED, BLOCK_H)
    return tl.zeros((BLOCK_H, BLOCK_H), dtype=tl.float32)  # the same type on both paths; dead code


@triton.jit
def times_gate(x, U, units, gate, tile, GATES: tl.constexpr, ON_CHIP: tl.constexpr, TRANSPOSED: tl.constexpr,
               PRECISION: tl.constexpr, BLOCK_H: tl.constexpr):
    """x @ (one gate's tile of U): the tile loaded before the loop (ON_CHIP), or read here, just
    before its dot, so only one tile at a time takes registers."""
    if ON_CHIP:
        w = tile
    else:
        w = gate_tile(U, units, gate, GATES, TRANSPOSED, BLOCK_H)
    return tl.dot(x, w, input_precision=PRECISION)


@triton.jit
def batch_block(n_batch, units, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """(rows, cols, ok): this program's BLOCK_B batch rows, the BLOCK_H state columns, and which
    (row, column) pairs exist."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_H)
    return rows, cols, (rows < n_batch)[:, None] & (cols < units)[None, :]


@triton.jit
def load_or_zeros(ptr, offs, ok, PRESENT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """A (BLOCK_B, BLOCK_H) tile of a gradient the kernel may not be given (PRESENT=False: zeros)."""
    if PRESENT:
        return tl.load(ptr + offs, mask=ok, other=0.0).to(tl.float32)
    return tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.float32)


@triton.jit
def load_step_before(SEQ, seq_rows, t, units, ok, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Step t - 1 of a (batch, time, units) sequence, zeros for t = 0 (the zero initial state)."""
    has_prev = (tl.zeros((BLOCK_B, BLOCK_H), dtype=tl.int32) + t) > 0  # a tensor mask: t may be a Python int
    return tl.load(SEQ + seq_rows + (t - 1) * units, mask=ok & has_prev, other=0.0).to(tl.float32)


@triton.jit
def step_kept(MASK, rows, t, n_batch, n_steps, MASKED: tl.constexpr):
    """(BLOCK_B, 1): which of the rows read step t, their mask (batch, time) nonzero; without a
    mask (MASKED=False) unused: kept_or returns the new value there."""
    if MASKED:
        m = tl.load(MASK + rows.to(tl.int64) * n_steps + t, mask=rows < n_batch, other=0.0)
        return (m != 0.0)[:, None]
    return (rows >= 0)[:, None]  # the same type on both paths; dead code


@triton.jit
def times_gate_mask(x, MASKS, rows, cols, ok, units, gate, GATES: tl.constexpr, PRESENT: tl.constexpr):
    """x (BLOCK_B, BLOCK_H) times one gate's recurrent dropout mask, MASKS (batch, GATES, units) at
    the rows and columns (PRESENT=False: x as it is, MASKS never read)."""
    if PRESENT:
        offs = rows[:, None].to(tl.int64) * GATES * units + gate * units + cols[None, :]
        return x * tl.load(MASKS + offs, mask=ok, other=0.0).to(tl.float32)
    return x


@triton.jit
def kept_or(keep, new, old, MASKED: tl.constexpr):
    """new where the row reads this step, else old: the state a masked step keeps, or the
    gradient it passes on (every row reads every step without a mask)."""
    if MASKED:
        return tl.where(keep, new, old)
    return new


@triton.jit
def for_backward(pre, post, SAVE_PRE: tl.constexpr):
    """What a forward saves of a gate: its pre-activation (SAVE_PRE: an activation whose
    derivative the backward needs at its input), else its activated value."""
    if SAVE_PRE:
        return pre
    return post


@triton.jit
def from_saved(saved, ACT: tl.constexpr, SAVE_PRE: tl.constexpr):
    """A gate's activated value from what the forward saved (for_backward)."""
    if SAVE_PRE:
        return ACT(saved)
    return saved


# --- launch -----------------------------------------------------------------------------------


@dataclass
class ScanCall(Call):
    tensors: tuple  # the kernel's tensor arguments, in its order
    n_batch: int
    n_steps: int
    units: int
    precision: str


@dataclass(frozen=True, kw_only=True)
class ActivationHooks(Binding):
    """A scan binding's activation hooks (kcomp/codegen/activation_hooks.py: a generated module
    names its own; a binding built by hand gets Keras's defaults, tanh and sigmoid) and whether
    the forward saves the gates' pre-activations (kcomp/ir/ops/scan_activations.saves_pre)."""

    activation: object = default_hooks.activation
    activation_grad: object = default_hooks.activation_grad
    recurrent_activation: object = default_hooks.recurrent_activation
    recurrent_activation_grad: object = default_hooks.recurrent_activation_grad
    save_pre: bool = False


def activation_flags(binding: ActivationHooks, grad: bool = False, recurrent: bool = True) -> dict:
    """A scan kernel's activation constexprs: ACT (and a gated cell's RACT and SAVE_PRE), with
    grad=True their derivatives ACT_GRAD (RACT_GRAD) too. recurrent=False: a SimpleRNN's scans,
    ACT (ACT_GRAD) alone (their launches pass their own SAVE and SAVE_PRE: recurrent_simple_rnn.py)."""
    flags = dict(ACT=binding.activation)
    if recurrent:
        flags.update(RACT=binding.recurrent_activation, SAVE_PRE=binding.save_pre)
    if grad:
        flags["ACT_GRAD"] = binding.activation_grad
        if recurrent:
            flags["RACT_GRAD"] = binding.recurrent_activation_grad
    return flags


def candidates(call, interpret: bool) -> list[dict]:
    block_h = max(16, next_power_of_2(call.units))  # tl.dot takes tiles of 16 and more
    if interpret:
        return [dict(BLOCK_B=16, BLOCK_H=block_h, num_warps=4)]
    # Few programs however the batch is split (one per BLOCK_B rows): smaller blocks give the
    # GPU more of them; larger ones fewer, longer dots. Wider tiles take more warps, so each
    # thread's share of the state, the gates and the tiles fits its registers (measured for sm_90,
    # the LSTM: BLOCK_H 64 with 2 warps spills 896 bytes, with 4 warps 16 bytes, with 8 none).
    warps = (2, 4) if block_h <= ON_CHIP_MAX else (8, 4)
    return [dict(BLOCK_B=b, BLOCK_H=block_h, num_warps=w) for b in (16, 32, 64) for w in warps]


def options(config: dict, on_chip_max: int = ON_CHIP_MAX) -> dict:
    return dict(ON_CHIP=config["BLOCK_H"] <= on_chip_max, BLOCK_B=config["BLOCK_B"], BLOCK_H=config["BLOCK_H"],
                num_warps=config["num_warps"])


def launch_grid(kernel, call: ScanCall, config: dict, on_chip_max: int = ON_CHIP_MAX, **flags) -> None:
    """Launch a scan kernel (tensors, then batch, steps and units, then its constexprs): one
    program per BLOCK_B batch rows. Its MASKED flag: whether the binding names a mask."""
    kernel[(cdiv(call.n_batch, config["BLOCK_B"]),)](
        *call.tensors, call.n_batch, call.n_steps, call.units, PRECISION=call.precision,
        **({"MASKED": call.binding.mask is not None} if hasattr(call.binding, "mask") else {}), **flags,
        **options(config, on_chip_max),
    )


def present(inputs, positions, absent: torch.Tensor) -> tuple:
    """The inputs at `positions`, contiguous; `absent` where a position is None (a gradient the
    kernel is not given: its pointer is never read)."""
    return tuple(absent if i is None else inputs[i].contiguous() for i in positions)


def sizes(what: str, t: torch.Tensor, units: int, max_units: int) -> tuple[int, int, int]:
    """(batch, time, units) of a scan over t (batch, time, ...), within the kernels' hidden size."""
    if units > max_units:
        raise TypeError(f"{what} kernels: {units} units; they hold at most {max_units} in registers")
    return t.shape[0], t.shape[1], units


def output_buffers(positions: tuple, shapes: tuple, out, like: torch.Tensor) -> tuple:
    """(out, one buffer per output of the op). positions[k]: where the op's output k stands among
    the kernel's outputs, or None where nothing reads it: the kernel writes it to scratch. `out`
    (the kernel's outputs: one tensor or a tuple) is allocated where not given."""
    kept = [position for position in positions if position is not None]
    if out is None:
        allocated = tuple(torch.empty(shapes[positions.index(k)], device=like.device, dtype=like.dtype) for k in kept)
        out = allocated[0] if len(allocated) == 1 else allocated
    given = (out,) if len(kept) == 1 else out
    buffers = [given[k] if k is not None else torch.empty(shape, device=like.device, dtype=like.dtype)
               for k, shape in zip(positions, shapes, strict=True)]
    return out, buffers


def alone(op: str):
    """A template's group rule: a kernel of one `op` node and nothing fused around it (a scan's
    loads and stores are per step inside its loop: no elementwise prologue or epilogue fits)."""

    def group(fusion, node):
        return Group(node) if node.op == op else None

    return group
