"""Optimizer template: one launch updates every parameter of the model (multi-tensor).

The training step ends with one optimizer_update op over n parameters of
different shapes. One kernel per parameter would be n launches of a few blocks
each; here the blocks of all parameters form one flat grid. The host gives the
kernel two small device tables:

    TABLE   int64 (n, 5 + 2K): per parameter the addresses (data_ptr) of
            param, grad, slot_0..slot_K-1, new param, new slot_0..slot_K-1,
            then its numel and the index of its first block in the grid
    OWNERS  int32 (blocks,): the parameter (row of TABLE) each block belongs to

A program reads its row, turns the addresses into float32 pointers, loads
BLOCK elements of the parameter and its gradient, and hands them to UPDATE, the
algorithm's Triton update: a hook from its record (kcomp/ir/optim/<name>.py),
which reads and writes the slots itself and returns the new parameter. The
kernel knows no algorithm. Int-to-pointer casts work under Triton's interpreter
too: there the addresses are those of the CPU tensors, which the interpreter
reads directly (so interpreted launches need CPU tensors).

A LossScaleOptimizer's update (the op's `skip` and `unscale`) also reads FINITE, a 0-d 0/1 flag,
and SCALE: each gradient is divided by SCALE as it loads; where FINITE is 0 the update stores
nothing and the kernel copies each parameter and slot to its new buffer instead (a no-op when
they are written in place), so a skipped step costs no launch per parameter.

An algorithm's hyper-parameters reach its hook as scalar arguments h0..h7 (the
generated hook binds them to the update's names), with the constants derived from
them (1 - beta, log(beta)) computed once in float64 by the record when the kernel
is generated; its flags are constexprs. The learning rate and the step are loaded
from their device tensors, so a step needs no host read and can be captured in a
CUDA graph. Everything is computed in float32.

A generated kernel module holds the `update` hook and an OptimizerBinding: which of
its inputs are the parameters, gradients, slots, learning rate and step (found by
value: two gradients may be one input), the scalars, and which of the update's
outputs the plan keeps; `launch` below checks, allocates and runs the kernel.

The tables depend only on the tensors' addresses; each kernel builds them once
per set of addresses and keeps a few (`address_table`, in its binding's `tables`). A captured CUDA graph replays the
launch with the tables and addresses of its capture, so it needs the same
buffers at every replay. Tables first needed inside a capture are filled once when
it ends, outside the graph, into device memory allocated before the capture began
(its binding's `spares`; `_tables_for_a_capture` says why).
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import accumulate

import torch
import triton
import triton.language as tl

from kcomp import capture
from kcomp.errors import KcompError
from kcomp.ir.optim import MAX_KERNEL_SCALARS, get as algorithm_record, triton_lib
from kcomp.ir.optim.record import jitted
from kcomp.kernels.autotune import tuned
from kcomp.kernels.sizes import cdiv
from kcomp.kernels.template import Binding, Call, Group, Template

_load = jitted(triton_lib.load)
_store = jitted(triton_lib.store)


@triton.jit
def optimizer_kernel(
    TABLE, OWNERS, LR, STEP, FINITE, SCALE, h0, h1, h2, h3, h4, h5, h6, h7,
    UPDATE: tl.constexpr, K: tl.constexpr, SKIP: tl.constexpr, UNSCALE: tl.constexpr, BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = TABLE + tl.load(OWNERS + pid).to(tl.int64) * (5 + 2 * K)
    numel = tl.load(row + 3 + 2 * K)
    first_block = tl.load(row + 4 + 2 * K)
    offs = (pid - first_block) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    p = _load(row, 0, offs, mask)
    g = _load(row, 1, offs, mask)
    if UNSCALE:  # a loss-scaled gradient, divided by the scale as it loads
        g = g / tl.load(SCALE)
    updating = mask
    if SKIP:  # a skipped step: the update writes nothing, and the old values are copied over
        flag = tl.zeros((BLOCK,), tl.float32) + tl.load(FINITE)  # one per lane (the interpreter cannot & a scalar)
        updating = mask & (flag != 0)
    new = UPDATE(row, offs, updating, p, g, tl.load(LR), tl.load(STEP), h0, h1, h2, h3, h4, h5, h6, h7)
    _store(row, 2 + K, offs, mask, tl.where(updating, new, p))
    if SKIP:
        kept = mask & (flag == 0)
        for j in tl.static_range(K):
            _store(row, 3 + K + j, offs, kept, _load(row, 2 + j, offs, kept))


# --- host side ----------------------------------------------------------------------------------

# One configuration: choosing among several would time the kernel by launching it
# repeatedly, which is only harmless while the new values never overwrite the old.
GPU_CONFIG = dict(BLOCK=1024, num_warps=4)
INTERPRETER_CONFIG = dict(BLOCK=1024, num_warps=4)


def candidate_configs(interpret: bool) -> list[dict]:
    return [INTERPRETER_CONFIG if interpret else GPU_CONFIG]


def triton_update(algorithm: str):
    """The algorithm's Triton update, as a @triton.jit function."""
    return jitted(algorithm_record(algorithm).triton_update)


def scalar_arguments(values) -> tuple[float, ...]:
    """h0..h7: the update's scalars in order, 0.0 in the arguments it does not use."""
    values = [float(v) for v in values]
    assert len(values) <= MAX_KERNEL_SCALARS, values  # the algorithm registry checks this at import
    return tuple(values) + (0.0,) * (MAX_KERNEL_SCALARS - len(values))


def check_operands(params, grads, slots, lr, step, guards=()) -> tuple:
    """Every tensor float32 on one device, made contiguous (the kernel reads flat memory).
    guards: the finite flag and the loss scale, where the update reads them."""
    device = lr.device
    for t in (*params, *grads, *slots, lr, step, *guards):
        if t.dtype != torch.float32 or t.device != device:
            raise TypeError(f"optimizer kernel: expected float32 tensors on {device}, received {t.dtype} on {t.device}")
    if device.type != "cpu" and _interpreted():
        raise TypeError("optimizer kernel: under Triton's interpreter the tensors must be on the CPU")
    return tuple(t.contiguous() for t in params), tuple(t.contiguous() for t in grads), tuple(t.contiguous() for t in slots)


def _interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(optimizer_kernel, InterpretedFunction)


# A kernel keeps this many tables: enough for the buffers a runtime alternates between (a plan
# reusing its pool, training and a user's own call); a CUDA graph that reads one keeps it alive itself.
MAX_TABLES = 8


def address_table(params, grads, slots, news, block: int, kept: OrderedDict, spares: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(TABLE, OWNERS) for these tensors; `news` are the outputs, new params then new slots.
    `kept`: the kernel's tables by (device, BLOCK, addresses and sizes), most recent last.
    `spares`: device tables by shape, allocated outside any capture for the next one to fill."""
    sources = (*params, *slots)
    for new, source in zip(news, sources, strict=True):
        if not new.is_contiguous() or new.shape != source.shape or new.dtype != torch.float32 or new.device != source.device:
            raise TypeError(f"optimizer kernel: an output buffer must be a contiguous float32 tensor of shape "
                            f"{tuple(source.shape)} on {source.device}; received {tuple(new.shape)} {new.dtype} on {new.device}")
    rows = _rows(params, grads, slots, news)
    device = params[0].device
    key = (str(device), block, rows)
    capturing = capture.capture_in_progress(device)
    tables = kept.get(key)
    if tables is None and capturing:
        tables = _tables_for_a_capture(rows, block, device, spares)
    elif tables is None:
        tables = kept[key] = tuple(h.to(device) for h in _host_tables(rows, block))
        while len(kept) > MAX_TABLES:
            kept.popitem(last=False)
    elif key in kept:
        kept.move_to_end(key)
    if capturing:
        capture.keep_for_the_graph(tables)  # it reads them at every replay, even once evicted here
    else:  # every capture follows a warm-up run of the same step (torch requires it): a spare is ready then
        shape = _shape(rows, block, device)
        if shape not in spares:
            spares[shape] = tuple(torch.empty_like(t) for t in tables)
    return tables


def _tables_for_a_capture(rows, block: int, device, spares: dict) -> tuple:
    """Tables for buffers first seen inside a capture (the gradients a plan allocates during it),
    filled when the capture ends, outside the graph, so no replay repeats a copy (the graph only
    reads them). Their memory must have been allocated before the capture: memory allocated during
    it comes from the graph's private pool, which hands out memory that the graph's earlier kernels
    write at every replay, and those writes would overwrite the addresses (seen on an H200: every
    captured training step failed with a misaligned address or an illegal memory access, and
    compute-sanitizer found the optimizer kernel reading an address far outside any allocation)."""
    spare = spares.pop(_shape(rows, block, device), None)
    if spare is None:
        raise KcompError("An optimizer kernel was captured in a CUDA graph before it ran once outside one at "
                         "this size; kcomp warms every step up before capturing it, so this is a bug in kcomp.")
    for d, h in zip(spare, _host_tables(rows, block)):
        capture.outside_the_graph(lambda d=d, h=h: d.copy_(h))
    return spare


def _shape(rows, block: int, device) -> tuple:
    """What the tables' shapes depend on: (device, BLOCK, each parameter's size, slots per parameter)."""
    return str(device), block, tuple(row[-1] for row in rows), len(rows[0])


def _rows(params, grads, slots, news) -> tuple:
    """Per parameter: the addresses of param, grad, its K slots, new param, its K new slots; then numel."""
    n = len(params)
    k = len(slots) // n
    rows = []
    for i in range(n):
        tensors = [params[i], grads[i], *slots[i * k : (i + 1) * k], news[i], *news[n + i * k : n + (i + 1) * k]]
        rows.append(tuple(t.data_ptr() for t in tensors) + (params[i].numel(),))
    return tuple(rows)


def _host_tables(rows, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(TABLE, OWNERS) on the host: each row gets the index of its first block; OWNERS maps blocks to rows."""
    blocks = [cdiv(row[-1], block) for row in rows]
    firsts = [0, *accumulate(blocks)][:-1]
    table = torch.tensor([[*row, first] for row, first in zip(rows, firsts)], dtype=torch.int64)
    owners = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int32), torch.tensor(blocks))
    return table, owners


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class OptimizerBinding(Binding):
    update: object  # the generated UPDATE hook: the algorithm's update with its flags bound
    # The update's operands among the kernel's inputs, by input index (the same index may appear
    # twice: fusion passes each distinct value once). slots: K per parameter, parameter by parameter.
    params: tuple[int, ...]
    grads: tuple[int, ...]
    slots: tuple[int, ...]
    lr: int
    step: int
    finite: int | None = None  # the 0-d 0/1 flag a skipped step reads as 0 (SKIP); None: never skipped
    scale: int | None = None  # the 0-d loss scale each gradient is divided by (UNSCALE); None: none
    scalars: tuple[float, ...]  # the update's scalars, in h0.. order (computed by the record in float64)
    # Per output of the update (new params, then new slots): its position among the kernel's outputs,
    # or None where nothing reads it (fusion leaves it out; the kernel writes it to a scratch buffer).
    outputs: tuple[int | None, ...]
    # This kernel's address tables, kept per set of buffers (address_table); not part of its identity.
    tables: OrderedDict = field(default_factory=OrderedDict, compare=False, repr=False)
    # Device tables allocated outside a capture, by shape, for the next capture (address_table).
    spares: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass
class OptimizerCall(Call):
    params: tuple
    grads: tuple
    slots: tuple
    lr: torch.Tensor
    step: torch.Tensor
    finite: torch.Tensor | None
    scale: torch.Tensor | None
    news: tuple  # every output of the update, in its order: `out` where kept, else scratch


def launch(binding: OptimizerBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: the parameters, their gradients and their slots, float32 on one device
    lr, step = inputs[binding.lr], inputs[binding.step]
    finite, scale = (None if i is None else inputs[i] for i in (binding.finite, binding.scale))
    params, grads, slots = check_operands([inputs[i] for i in binding.params], [inputs[i] for i in binding.grads],
                                          [inputs[i] for i in binding.slots], lr, step,
                                          [t for t in (finite, scale) if t is not None])
    # allocate: the new parameters, then the new slots
    out, news = allocate(binding.outputs, (*params, *slots), out)
    run(OptimizerCall(binding, inputs, out, params, grads, slots, lr, step, finite, scale, news), config, interpret)
    return out


def allocate(outputs, sources, out=None) -> tuple:
    """(out, news): `out` as the plan passes it (one tensor when the kernel has one output, else a
    tuple), allocated like the sources (params then slots) where not given; `news`, every output
    of the update in its order, a scratch buffer where nothing reads one (`outputs`: positions)."""
    kept = {position: i for i, position in enumerate(outputs) if position is not None}
    if out is None:
        allocated = tuple(torch.empty_like(sources[kept[j]]) for j in range(len(kept)))
        out = allocated[0] if len(kept) == 1 else allocated
    given = (out,) if len(kept) == 1 else out
    news = tuple(given[j] if j is not None else torch.empty_like(source) for j, source in zip(outputs, sources, strict=True))
    return out, news


@tuned(lambda call, interpret: candidate_configs(interpret))
def run(call: OptimizerCall, config: dict):
    # one program per BLOCK elements of each parameter; the tables say which (kept per set of addresses)
    table, owners = address_table(call.params, call.grads, call.slots, call.news, config["BLOCK"], call.binding.tables,
                                  call.binding.spares)
    optimizer_kernel[(owners.numel(),)](
        table, owners, call.lr, call.step, call.lr if call.finite is None else call.finite,
        call.lr if call.scale is None else call.scale, *scalar_arguments(call.binding.scalars),
        UPDATE=call.binding.update, K=len(call.slots) // len(call.params),
        SKIP=call.finite is not None, UNSCALE=call.scale is not None,
        BLOCK=config["BLOCK"], num_warps=config["num_warps"],
    )


def _in_place(node, param, views) -> bool:
    """Always: the update reads each parameter and slot only at the element it writes."""
    return True


# --- grouping: how the fusion pass forms this template's kernels --------------------------------
def _group(fusion, node):
    """Every parameter in one multi-tensor launch: float32 tensors, each passed in (no literals)."""
    if node.op == "optimizer_update" and node.attrs["count"] > 0 and all(
            v.dtype == "float32" and not fusion.is_constant(v) for v in node.inputs):
        return Group(node)
    return None


TEMPLATES = (Template("optimizer", launch, OptimizerBinding, in_place=_in_place, group=_group, priority=0),)
