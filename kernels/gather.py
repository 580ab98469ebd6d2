"""Embedding templates: the forward's row gather, and its gradient as a deterministic scatter-add.

embedding: out[p, :] = EPILOGUE(table[ids[p], :]) for every flat position p of ids. Each program
  copies a BLOCK_M x BLOCK_D tile: BLOCK_M ids, then those rows of the table. Without an
  epilogue the bits move unchanged (any float dtype); the epilogue (generated, as a matmul's:
  EPILOGUE(acc, offs_m, offs_n, mask_m, mask_n, E0..E3, S0..S3) on float32, rows the
  positions) computes the elementwise ops after the lookup (a scale, an activation) before the
  store. An id outside [0, input_dim) reads nothing and gives a row of NaN: the range
  check before launch (kcomp/training/data.py) refuses such ids at the API with a KcompError, and
  this keeps a bad id computed inside a graph from reading outside the table, and makes it show.
  Where an embedding's only reader is a Dense-like matmul, that matmul loads A's rows through the
  ids instead (kernels/matmul.py, GATHER_A) and this kernel does not run.

embedding_grad: d table[r, :] = the sum of dy[p, :] over every position p whose id is r. Its
  input is sort_ids' output (kcomp/passes/decompose_embedding.py): the ids sorted stably and
  the position each came from, so the positions of row r are one run, in order of position.
  Two kernels, the order of every addition fixed by the ids and CHUNK (kcomp/ir/ops/gather.py,
  128 sorted indices) alone:
  - embedding_grad_chunks: the sorted indices cut into chunks of CHUNK; each program takes
    BLOCK_C chunks side by side and walks their CHUNK indices in order, adding each one's dy row
    to a float32 (float64 for float64) running sum that restarts where the id changes, and
    stores the sum at every index (so the buffer, dy's shape, is all written: no clearing, and
    the op's reference can say what every element is);
  - embedding_grad: each program owns BLOCK_R table rows x BLOCK_D columns; it finds each row's
    run by binary search and adds, in chunk order, the sum stored at the run's last index in
    each chunk it touches, then stores every row, those no id reached as zeros.

Why this scheme (the choice is the issue's: duplicates add exactly the same bits every run):
  - float atomics (index_add_ on CUDA, tl.atomic_add) add a row's terms in whichever order the
    threads arrive: not the same bits run to run;
  - a one-hot matmul (onehot(ids)^T @ dy) is deterministic but costs input_dim x positions x
    output_dim multiply-adds (10^4 x 1.6 x 10^4 x 32 for the seed's sentiment model);
  - sort + segment sum costs one sort of the ids (a radix sort on the GPU: torch.sort, stable)
    and one read of dy, plus here one write and a partial read of the chunk sums (dy's size
    in float32). Summing each run in one program (the previous kernel) made a frequent id (the
    padding id 0 in a padded text batch: about half of the positions) a serial walk of
    thousands of rows in one program (8.0 s a step under the interpreter at the sentiment
    size: 32 x 500 ids, half of them 0, 10000 rows, 32 features); cut into chunks, no program
    walks more than CHUNK indices plus positions / CHUNK chunk sums (0.49 s).
  The bits: independent of the block sizes (BLOCK_C, BLOCK_R, BLOCK_D, num_warps), the config
  autotuning picks and the device, since each add is one IEEE add in a fixed order (in the
  interpreter too); they are the bits of the two ops' references (tests/test_kernels_embedding.py
  checks them equal). They equal index_add_'s (a row's terms added one by one in order of
  position) where no run is cut, i.e. each id's run lies inside one chunk (so always for up to
  CHUNK positions); a run cut into k pieces is added as k in-order partial sums, added in order:
  a different rounding, as exact in float64 (tests check it against autograd).
  Ids outside [0, input_dim) sort before or after every row's run and are never added.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.autotune import tuned
from kcomp.kernels.operands import EPILOGUE_OPERANDS, Operand, contiguous_operands, tile_operand_args
from kcomp.kernels.sizes import cdiv, next_power_of_2
from kcomp.kernels.template import Binding, Call, Group, Template


@triton.jit
def embedding_kernel(IDS, TABLE, OUT, n_positions, input_dim, dim, stride_table,
                     E0, E1, E2, E3, S0, S1, S2, S3, EPILOGUE: tl.constexpr, HAS_EPILOGUE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_m = offs_m < n_positions
    mask_d = offs_d < dim
    rows = tl.load(IDS + offs_m, mask=mask_m, other=0).to(tl.int64)
    inside = (rows >= 0) & (rows < input_dim)
    mask = mask_m[:, None] & mask_d[None, :]
    values = tl.load(TABLE + rows[:, None] * stride_table + offs_d[None, :], mask=mask & inside[:, None],
                     other=float("nan"))
    if HAS_EPILOGUE:  # (without one the rows are stored as read: float64 stays float64)
        values = EPILOGUE(values.to(tl.float32), offs_m, offs_d, mask_m, mask_d, E0, E1, E2, E3, S0, S1, S2, S3)
    tl.store(OUT + offs_m[:, None].to(tl.int64) * dim + offs_d[None, :], values.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _run_start(SORTED, n_positions, targets, SEARCH_STEPS):
    """For each target id, the first index i of SORTED (ascending) with SORTED[i] >= target: a
    binary search, SEARCH_STEPS halvings (enough for n_positions + 1 possible answers)."""
    lo = tl.zeros(targets.shape, dtype=tl.int64)
    hi = tl.full(targets.shape, n_positions, dtype=tl.int64)
    for _ in range(SEARCH_STEPS):
        active = lo < hi
        mid = (lo + hi) // 2
        value = tl.load(SORTED + mid, mask=active, other=0).to(tl.int64)
        right = active & (value < targets)
        lo = tl.where(right, mid + 1, lo)
        hi = tl.where(active & (value >= targets), mid, hi)
    return lo


@triton.jit
def embedding_grad_chunks_kernel(SORTED, POSITIONS, DY, SUMS, n_positions, dim, CHUNK,
                                 BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_C chunks of CHUNK sorted indices each, side by side: one step per index, in order;
    at index j the running sum of j's segment (reset where the id changes) is stored at SUMS[j]."""
    first = (tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64) * CHUNK
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = offs_d < dim
    acc = tl.zeros((BLOCK_C, BLOCK_D), dtype=SUMS.dtype.element_ty)
    previous = tl.full((BLOCK_C,), 0, dtype=tl.int64)
    for k in range(0, CHUNK):
        j = first + k
        here = j < n_positions
        this = tl.load(SORTED + j, mask=here, other=0).to(tl.int64)
        starts = (this != previous) | (k == 0)
        p = tl.load(POSITIONS + j, mask=here, other=0)
        term = tl.load(DY + p[:, None] * dim + offs_d[None, :], mask=here[:, None] & mask_d[None, :], other=0.0)
        acc = tl.where(starts[:, None], 0.0, acc) + term.to(acc.dtype)
        tl.store(SUMS + j[:, None] * dim + offs_d[None, :], acc, mask=here[:, None] & mask_d[None, :])
        previous = this


@triton.jit
def embedding_grad_kernel(SORTED, SUMS, OUT, n_positions, input_dim, dim, CHUNK, SEARCH_STEPS,
                          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_R table rows: each row's run found by binary search, then the sum at the end of
    each of its segments (the last index of the run in each chunk) added in chunk order."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_r = rows < input_dim
    mask_d = offs_d < dim
    start = _run_start(SORTED, n_positions, rows.to(tl.int64), SEARCH_STEPS)
    end = _run_start(SORTED, n_positions, rows.to(tl.int64) + 1, SEARCH_STEPS)
    end = tl.where(mask_r, end, start)  # rows past input_dim add nothing
    pieces = tl.where(end > start, (end - 1) // CHUNK - start // CHUNK + 1, 0)
    acc = tl.zeros((BLOCK_R, BLOCK_D), dtype=SUMS.dtype.element_ty)
    for piece in range(0, tl.max(pieces, axis=0)):
        here = piece < pieces
        last = tl.minimum(end, (start // CHUNK + piece + 1) * CHUNK) - 1
        acc += tl.load(SUMS + last[:, None] * dim + offs_d[None, :], mask=here[:, None] & mask_d[None, :], other=0.0)
    out = OUT + rows[:, None].to(tl.int64) * dim + offs_d[None, :]
    tl.store(out, acc.to(OUT.dtype.element_ty), mask=mask_r[:, None] & mask_d[None, :])


# --- block sizes (data: one config per shape; the interpreter's few and wide) -----------------


def gather_config(dim: int, interpret: bool) -> dict:
    block_d = min(next_power_of_2(max(dim, 1)), 256 if interpret else 128)
    return dict(BLOCK_M=max(16, 4096 // block_d) if interpret else 64, BLOCK_D=block_d, num_warps=4)


def chunks_config(dim: int, interpret: bool) -> dict:
    # Interpreter: many chunks per program, each program being costly there. GPU: a few chunks
    # per program (CHUNK dependent steps each), many programs.
    block_d = min(next_power_of_2(max(dim, 1)), 256 if interpret else 64)
    return dict(BLOCK_C=256 if interpret else 4, BLOCK_D=block_d, num_warps=4)


def grad_config(dim: int, interpret: bool) -> dict:
    # GPU: few rows per program. Interpreter: many (measured, the sentiment example's gradient at
    # batch 16: 9.4 s with 32 rows, 0.5 s with 1024, on this loaded machine).
    block_d = min(next_power_of_2(max(dim, 1)), 256 if interpret else 64)
    return dict(BLOCK_R=1024 if interpret else 4, BLOCK_D=block_d, num_warps=4)


# --- launch -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EmbeddingBinding(Binding):
    ids: int  # which input holds the ids
    table: int  # which input is the (input_dim, output_dim) table
    epilogue: object  # the generated EPILOGUE hook (a no-op when has_epilogue is False)
    has_epilogue: bool
    operands: tuple[Operand, ...]  # what the epilogue loads: E0..E3, row strides S0..S3
    out_dtype: torch.dtype


@dataclass(frozen=True, kw_only=True)
class EmbeddingGradChunksBinding(Binding):
    sorted_ids: int  # which inputs are sort_ids' outputs
    positions: int
    dy: int  # the gradient of the embedding's output (ids' shape + (output_dim,))
    chunk: int  # sorted indices per chunk: the op's attribute, part of the sum's order


@dataclass(frozen=True, kw_only=True)
class EmbeddingGradBinding(Binding):
    sorted_ids: int
    sums: int  # embedding_grad_chunks' output
    input_dim: int
    chunk: int
    out_dtype: torch.dtype  # dy's


@dataclass
class GatherCall(Call):
    ids: torch.Tensor
    table: torch.Tensor
    dim: int
    epilogue_args: list  # E0..E3, S0..S3


@dataclass
class ScatterCall(Call):
    sorted_ids: torch.Tensor
    rows: torch.Tensor  # dy (the chunks' pass) or the chunk sums (the rows' pass)
    dim: int
    positions: torch.Tensor | None = None


def launch_embedding(binding: EmbeddingBinding, inputs, out=None, config=None, precision="tf32", interpret=None):
    # check: ids of any shape (read flat), the table's rows contiguous
    ids, table = inputs[binding.ids].contiguous(), inputs[binding.table]
    if table.stride(1) != 1:
        table = table.contiguous()
    tensors = list(inputs)
    contiguous_operands(tensors, binding.operands)
    # allocate
    if out is None:
        out = torch.empty((*ids.shape, table.shape[1]), device=table.device, dtype=binding.out_dtype)
    args = tile_operand_args(tensors, binding.operands, EPILOGUE_OPERANDS, out)
    run_embedding(GatherCall(binding, inputs, out, ids, table, table.shape[1], args), config, interpret)
    return out


@tuned(lambda call, interpret: [gather_config(call.dim, interpret)])
def run_embedding(call: GatherCall, config: dict):
    n = call.ids.numel()
    grid = (cdiv(n, config["BLOCK_M"]), cdiv(call.dim, config["BLOCK_D"]))
    b = call.binding
    embedding_kernel[grid](call.ids, call.table, call.out, n, call.table.shape[0], call.dim, call.table.stride(0),
                           *call.epilogue_args, EPILOGUE=b.epilogue, HAS_EPILOGUE=b.has_epilogue,
                           BLOCK_M=config["BLOCK_M"], BLOCK_D=config["BLOCK_D"], num_warps=config["num_warps"])


def launch_embedding_grad_chunks(binding: EmbeddingGradChunksBinding, inputs, out=None, config=None, precision="tf32",
                                 interpret=None):
    # check: sort_ids' outputs and dy, read flat
    sorted_ids, positions = inputs[binding.sorted_ids].contiguous(), inputs[binding.positions].contiguous()
    dy = inputs[binding.dy].contiguous()
    # allocate: float32 sums (float64 for float64), every index stored
    if out is None:
        out = torch.empty(dy.shape, device=dy.device, dtype=torch.float64 if dy.dtype == torch.float64 else torch.float32)
    run_embedding_grad_chunks(ScatterCall(binding, inputs, out, sorted_ids, dy, dy.shape[-1], positions), config, interpret)
    return out


@tuned(lambda call, interpret: [chunks_config(call.dim, interpret)])
def run_embedding_grad_chunks(call: ScatterCall, config: dict):
    n = call.sorted_ids.numel()
    grid = (cdiv(cdiv(n, call.binding.chunk), config["BLOCK_C"]), cdiv(call.dim, config["BLOCK_D"]))
    embedding_grad_chunks_kernel[grid](call.sorted_ids, call.positions, call.rows, call.out, n, call.dim,
                                       call.binding.chunk, BLOCK_C=config["BLOCK_C"], BLOCK_D=config["BLOCK_D"],
                                       num_warps=config["num_warps"])


def launch_embedding_grad(binding: EmbeddingGradBinding, inputs, out=None, config=None, precision="tf32",
                          interpret=None):
    # check: the sorted ids and the chunk sums, read flat
    sorted_ids, sums = inputs[binding.sorted_ids].contiguous(), inputs[binding.sums].contiguous()
    dim = sums.shape[-1]
    # allocate: every row is stored (zeros where no id is), so `out` needs no clearing
    if out is None:
        out = torch.empty((binding.input_dim, dim), device=sums.device, dtype=binding.out_dtype)
    run_embedding_grad(ScatterCall(binding, inputs, out, sorted_ids, sums, dim), config, interpret)
    return out


@tuned(lambda call, interpret: [grad_config(call.dim, interpret)])
def run_embedding_grad(call: ScatterCall, config: dict):
    n = call.sorted_ids.numel()
    rows = call.binding.input_dim
    grid = (cdiv(rows, config["BLOCK_R"]), cdiv(call.dim, config["BLOCK_D"]))
    embedding_grad_kernel[grid](
        call.sorted_ids, call.rows, call.out, n, rows, call.dim, call.binding.chunk, n.bit_length(),
        BLOCK_R=config["BLOCK_R"], BLOCK_D=config["BLOCK_D"], num_warps=config["num_warps"],
    )


# --- grouping: how the fusion pass forms these templates' kernels -------------------------------


def _embedding_group(fusion, node):
    """An embedding with the single-use elementwise ops after it as its epilogue."""
    if node.op != "embedding" or node.inputs[1].dtype not in FLOAT_DTYPES:
        return None
    nodes = [node]
    fusion.absorb_chain(nodes, EPILOGUE_OPERANDS)
    return Group(node, epilogue=nodes[1:])


def _one_op(op):
    """A template whose kernel is one op alone (no fused expression)."""
    return lambda fusion, node: Group(node) if node.op == op else None


TEMPLATES = (
    Template("embedding", launch_embedding, EmbeddingBinding, group=_embedding_group, priority=64),
    Template("embedding_grad_chunks", launch_embedding_grad_chunks, EmbeddingGradChunksBinding,
             group=_one_op("embedding_grad_chunks"), priority=65),
    Template("embedding_grad", launch_embedding_grad, EmbeddingGradBinding, group=_one_op("embedding_grad_sorted"),
             priority=66),
)
