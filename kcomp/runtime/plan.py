"""A plan: the fused graph as an ordered list of launches over buffers.

Steps are kernel launches (generated modules), views (reshape, transpose, slice: no copy) and
unfused nodes run with their torch reference (ops no template covers yet).
Nodes computed from weights alone (batch-norm's folded scale and shift) run
once per weight update, not per batch.

Sizes are bound at run time from the inputs' shapes, so one plan serves every
batch size. Buffers are reused by liveness: when the last reader of a value
has run, its buffer returns to a pool and the next output of the same size
takes it. `last_peak_bytes` is the peak activation memory of the last run.
"""

from dataclasses import dataclass, field

import torch

from kcomp.codegen.module import KernelSource, kernel_source
from kcomp.ir import saved_forwards
from kcomp.ir.cost import SHAPE_ONLY_RESULTS, VIEW_OPS
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.registry import OPS
from kcomp.ir.types import TORCH_DTYPES, dim_size, is_static
from kcomp.passes.fuse import weight_only_values
from kcomp.runtime.kernel_cache import load_kernel
from kcomp.runtime.versions import contents_key


# VIEW_OPS run as torch views (no copy, no launch; the cost model counts as this plan runs). A
# transposed or sliced view reaches its reader as strides: the matmul template reads A and B (2-D, or
# batched with up to two batch axes) through them (the weight gradient's activations^T, an LSTM's last h_t out of the h sequence);
# other templates copy what they need contiguous in their launch, as a reshape that cannot be a
# view copies. SHAPE_ONLY_RESULTS are made once per device and shapes, not once per run.


@dataclass
class Instruction:
    """One node of the plan, as it runs: a generated kernel's launch, a view, or its torch reference."""
    node: Node
    kind: str  # "kernel", "view" or "torch"
    source: KernelSource | None = None
    launch: object = None
    frees: list[int] = field(default_factory=list)  # value ids whose last reader is this instruction


class BufferPool:
    """Recycles output buffers by (numel, dtype, device); counts the bytes alive."""

    def __init__(self):
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.alive_bytes = 0
        self.peak_bytes = 0
        self._pooled: set[int] = set()  # storage addresses of buffers this pool handed out

    def take(self, shape, dtype, device) -> torch.Tensor:
        numel = 1
        for d in shape:
            numel *= d
        key = (numel, dtype, str(device))
        stack = self.free.get(key)
        buf = stack.pop() if stack else torch.empty(numel, dtype=dtype, device=device)
        self._pooled.add(buf.untyped_storage().data_ptr())
        self.count(buf)
        return buf.view(shape)

    def count(self, tensor: torch.Tensor) -> None:
        """Count an activation allocated elsewhere (a torch fallback's result) as alive."""
        self.alive_bytes += tensor.numel() * tensor.element_size()
        self.peak_bytes = max(self.peak_bytes, self.alive_bytes)

    def owns(self, tensor: torch.Tensor) -> bool:
        return tensor.untyped_storage().data_ptr() in self._pooled

    def release(self, tensor: torch.Tensor) -> None:
        """A counted tensor that is not the pool's is dead: it stops counting (torch frees it)."""
        self.alive_bytes -= tensor.numel() * tensor.element_size()

    def give(self, tensor: torch.Tensor) -> None:
        self.alive_bytes -= tensor.numel() * tensor.element_size()
        key = (tensor.numel(), tensor.dtype, str(tensor.device))
        self.free.setdefault(key, []).append(tensor.reshape(-1))


def bind_symbols(graph: Graph, inputs) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for v, t in zip(graph.inputs, inputs):
        for d, n in zip(v.shape, t.shape):
            if not is_static(d):
                sizes[d] = int(n)
    return sizes


def concrete(v: Value, sizes: dict[str, int]) -> tuple[int, ...]:
    return tuple(dim_size(d, sizes) for d in v.shape)


class Schedule:
    """How a plan runs a graph, shared by Plan and modeled_peak_bytes.

    A forward graph's weight-only values (what depends on weights alone) are `hoisted`: computed
    once per set of weights, before the runs. A step graph (graph.kind "step": a training or
    test step) hoists nothing, its weights change every run, and a CUDA graph captured from a
    run recomputes everything on each replay. `nodes` run every time, in order; a value is freed
    after `last_reader[value id]` (an index into `nodes`) unless it is `kept`.
    """

    def __init__(self, graph: Graph):
        self.hoisted = weight_only_values(graph) if graph.kind == "forward" else set()
        self.hoisted_nodes = [n for n in graph.nodes if n.outputs[0].id in self.hoisted]
        self.nodes = [n for n in graph.nodes if n.outputs[0].id not in self.hoisted]
        self.kept = {v.id for v in (*graph.outputs, *graph.params, *graph.inputs)} | self.hoisted
        self.last_reader: dict[int, int] = {}
        for i, node in enumerate(self.nodes):
            for v in node.inputs:
                self.last_reader[v.id] = i

    def freed_after(self) -> dict[int, list[int]]:
        """Index of a node in `nodes` -> the ids of the values no one reads after it."""
        frees: dict[int, list[int]] = {}
        for vid, i in self.last_reader.items():
            if vid not in self.kept:
                frees.setdefault(i, []).append(vid)
        return frees


class Plan:
    def __init__(self, graph: Graph, precision: str = "tf32", collective=None):
        """collective(node, tensors) -> (tensors, wait): how an all_reduce node runs (a data-parallel
        step's process group, kcomp/distribution/fused_step.py): the sums, which hold their values
        once wait() returns (wait None: at once). The plan calls wait only before the first
        instruction that reads them, so the instructions between overlap the collective; their count
        per all_reduce is in `overlaps` after a run. None: as the op's reference, the identity."""
        self.graph = graph
        self.precision = precision
        self.collective = collective
        self.overlaps: list[int | None] = []  # per all_reduce of the last run: instructions run while it summed
        schedule = Schedule(graph)
        self.weight_only = schedule.hoisted
        kernels = 0

        def instruction_for(node: Node) -> Instruction:
            nonlocal kernels
            if node.op == "kernel":
                source = kernel_source(node, kernels)
                kernels += 1
                return Instruction(node, "kernel", source, load_kernel(source).launch)
            return Instruction(node, "view" if node.op in VIEW_OPS else "torch")

        # Kernels are numbered in graph order, hoisted ones included (kernel_N names as in a build).
        instructions = {id(node): instruction_for(node) for node in graph.nodes}
        self.prepare_instructions: list[Instruction] = [instructions[id(n)] for n in schedule.hoisted_nodes]
        self.instructions: list[Instruction] = [instructions[id(n)] for n in schedule.nodes]
        for i, vids in schedule.freed_after().items():
            self.instructions[i].frees.extend(vids)
        self._prepared_for: tuple | None = None
        self._prepared: dict[int, torch.Tensor] = {}
        self._constants: dict[tuple, torch.Tensor] = {}  # SHAPE_ONLY_RESULTS, by (value id, device, shapes)
        self._taped = saved_forwards.forwards_with_backward(graph.nodes)  # torch ops whose backward op follows
        self.last_peak_bytes = 0

    @property
    def kernels(self) -> list[Instruction]:
        return [i for i in self.instructions if i.kind == "kernel"]

    def _prepare(self, params: dict[str, torch.Tensor]) -> None:
        """Run the weight-only instructions when the weights changed since the last run."""
        tensors = [params[p.name] for p in self.graph.params]
        key = contents_key(tensors)
        if key == self._prepared_for:
            return
        env = {p.id: t for p, t in zip(self.graph.params, tensors)}
        device = self._device(params)
        for instr in self.prepare_instructions:
            outs = _run_torch(instr.node, [env[v.id] for v in instr.node.inputs], device)
            env.update({v.id: t for v, t in zip(instr.node.outputs, outs)})
        self._prepared = {vid: env[vid] for vid in self.weight_only if vid in env}
        self._prepared_for = key

    def _device(self, params) -> torch.device:
        tensors = [params[p.name] for p in self.graph.params]
        return tensors[0].device if tensors else torch.device("cpu")

    def in_place_outputs(self, targets: dict[int, str]) -> dict[int, str]:
        """Of `targets` (graph output position -> the parameter whose buffer takes that new value),
        the outputs a kernel may write straight into the parameter's buffer, saving a copy per
        weight and slot per training step: those computed by a kernel whose template's record
        allows it (it reads the parameter, if at all, at the element it writes: the optimizer's,
        a same-shape pointwise kernel, a reduction's epilogue adding into a running sum),
        when nothing reads the parameter, or a view of it, after that kernel."""
        from kcomp.kernels import registry

        graph = self.graph
        param_values = {p.name: p for p in graph.params}
        root = {p.id: p.id for p in graph.params}  # value id -> the parameter it views
        last_read: dict[int, int] = {}
        producer: dict[int, int] = {}
        for i, instr in enumerate(self.instructions):
            for v in instr.node.inputs:
                if v.id in root:
                    last_read[root[v.id]] = i
            for v in instr.node.outputs:
                producer[v.id] = i
            if instr.kind == "view" and instr.node.inputs[0].id in root:
                root[instr.node.outputs[0].id] = root[instr.node.inputs[0].id]
        read_by_prepare = {v.id for instr in self.prepare_instructions for v in instr.node.inputs}
        output_ids = [v.id for v in graph.outputs]
        safe = {}
        for position, name in targets.items():
            value, param = graph.outputs[position], param_values.get(name)
            k = producer.get(value.id)
            if param is None or k is None or param.id in read_by_prepare or output_ids.count(value.id) > 1:
                continue
            instr = self.instructions[k]
            if instr.kind != "kernel" or last_read.get(param.id, -1) > k:
                continue
            in_place = registry.get(instr.node.attrs["template"]).in_place  # the template's rule
            views = {vid for vid, r in root.items() if r == param.id}  # the parameter and its views
            if in_place is not None and in_place(instr.node, param, views):
                safe[position] = name
        return safe

    def run(self, inputs, params: dict[str, torch.Tensor], into: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """The graph's outputs for these inputs and parameters; `into` (output position -> buffer,
        positions that in_place_outputs allowed) has kernels write those outputs into the buffers.
        A torch op whose backward op runs later in the plan leaves its tape for it (kcomp.ir.saved_forwards)."""
        with saved_forwards.for_run(self._taped):
            return self._run(inputs, params, into)

    def _run(self, inputs, params, into) -> list[torch.Tensor]:
        self._prepare(params)
        targets = {self.graph.outputs[i].id: buf for i, buf in (into or {}).items()}
        sizes = bind_symbols(self.graph, inputs)
        device = inputs[0].device if inputs else self._device(params)
        env: dict[int, torch.Tensor] = {v.id: t for v, t in zip(self.graph.inputs, inputs)}
        env.update({p.id: params[p.name] for p in self.graph.params})
        env.update(self._prepared)
        pool = BufferPool()
        owners: dict[int, int] = {}  # value id -> id of the pooled buffer it lives in
        readers: dict[int, int] = {}  # pooled buffer id -> live values in it
        buffers: dict[int, torch.Tensor] = {}
        pending: dict[int, tuple] = {}  # a started collective's result id -> (its wait, index in overlaps, start)
        self.overlaps = []
        for position, instr in enumerate(self.instructions):
            node = instr.node
            if pending:
                self._wait_for([v.id for v in node.inputs], pending, position)
            args = [env[v.id] for v in node.inputs]
            out_value = node.outputs[0]
            if instr.kind == "kernel":
                # A kernel writes into pooled buffers, one per output (a tuple when it has several).
                outs = tuple(targets[v.id] if v.id in targets else pool.take(concrete(v, sizes), TORCH_DTYPES[v.dtype], args[0].device)
                             for v in node.outputs)
                instr.launch(*args, out=outs if len(outs) > 1 else outs[0], precision=self.precision)
                for v, out in zip(node.outputs, outs):
                    env[v.id] = out
                    if v.id in targets:
                        continue  # a parameter's buffer: not the pool's, never freed here
                    owners[v.id] = id(out)
                    buffers[id(out)] = out
                    readers[id(out)] = 1
            elif instr.kind == "view":
                x = args[0]
                env[out_value.id] = _view(node, x, concrete(out_value, sizes))
                _alias(node.inputs[0], out_value, owners, readers)
            elif node.op in SHAPE_ONLY_RESULTS:
                # Made once per device and input shapes, and kept (nothing writes to it): not a fill
                # per run, which in a captured training step would be a launch in every replay.
                key = (out_value.id, str(device), *(tuple(a.shape) for a in args))
                if key not in self._constants:
                    self._constants[key] = _run_torch(node, args, device)[0]
                env[out_value.id] = self._constants[key]
            else:
                if node.op == "all_reduce" and self.collective is not None:
                    results, wait = self.collective(node, args)
                    if wait is not None:
                        self.overlaps.append(None)  # set when it is first waited for
                        pending.update({v.id: (wait, len(self.overlaps) - 1, position) for v in node.outputs})
                else:
                    results = _run_torch(node, args, device)
                for v, t in zip(node.outputs, results):
                    env[v.id] = t
                    # A torch op may return a view of an input (transpose does): the input's
                    # buffer then lives on in it. Otherwise the result is a new allocation.
                    source = next((x for x, a in zip(node.inputs, args) if _shares_memory(t, a)), None)
                    if source is not None:
                        _alias(source, v, owners, readers)
                    else:
                        pool.count(t)
                        owners[v.id] = id(t)
                        buffers[id(t)] = t
                        readers[id(t)] = 1
            for vid in instr.frees:
                env.pop(vid, None)
                base = owners.pop(vid, None)
                if base is not None:
                    readers[base] -= 1
                    if readers[base] == 0:
                        buf = buffers.pop(base)
                        if pool.owns(buf):
                            pool.give(buf)
                        else:
                            pool.release(buf)
        self._wait_for(list(pending), pending, len(self.instructions))  # all, before the outputs go out
        self.last_peak_bytes = pool.peak_bytes
        return [env[v.id] for v in self.graph.outputs]

    def _wait_for(self, value_ids, pending: dict, position: int) -> None:
        """Wait for the started collectives that compute these values, before instruction `position`
        reads them; each one's count in `overlaps`: the instructions run between its start and here."""
        for vid in value_ids:
            started = pending.pop(vid, None)
            if started is not None:
                wait, index, started_at = started
                wait()  # the collective's other results share it: their waits return at once
                if self.overlaps[index] is None:
                    self.overlaps[index] = position - started_at - 1


def _view(node: Node, x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A VIEW_OPS node's result, sharing x's memory (a reshape of a strided view may copy)."""
    a = node.attrs
    if node.op == "transpose":
        return x.permute(a["perm"])
    if node.op == "slice":
        return x.narrow(a["axis"], a["start"], a["stop"] - a["start"])
    return x.reshape(shape)


def _alias(source: Value, view: Value, owners: dict, readers: dict) -> None:
    """`view` shares `source`'s buffer: the buffer is free only when both are dead."""
    base = owners.get(source.id)
    if base is not None:
        owners[view.id] = base
        readers[base] += 1


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() > 0


def _run_torch(node: Node, args, device) -> tuple:
    if node.op == "constant":  # made where the plan runs (a fill, which a CUDA graph can capture)
        a = node.attrs
        return (torch.full((), a["value"], dtype=TORCH_DTYPES[a["dtype"]], device=device),)
    result = OPS[node.op].reference(*args, **node.attrs)
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def modeled_peak_bytes(graph: Graph, sizes: dict[str, int]) -> int:
    """The peak activation memory a Plan of `graph` reaches at these sizes, without running it:
    each kernel or torch instruction allocates its output, views share, and a buffer is free once
    its last reader has run (graph inputs, weights and hoisted values are not counted). For a
    step graph nothing is hoisted, as when it runs (Schedule)."""
    from kcomp.ir.cost import nbytes

    schedule = Schedule(graph)
    keep, last, nodes = schedule.kept, schedule.last_reader, schedule.nodes
    owner: dict[int, int] = {}
    readers: dict[int, int] = {}
    size: dict[int, int] = {}
    alive = peak = 0
    for i, node in enumerate(nodes):
        for v in node.outputs:
            if node.op in ("reshape", "transpose") and node.inputs[0].id in owner:
                owner[v.id] = owner[node.inputs[0].id]
                readers[owner[v.id]] += 1
            else:
                owner[v.id], readers[v.id], size[v.id] = v.id, 1, nbytes(v, sizes)
                alive += size[v.id]
        peak = max(peak, alive)
        for v in node.inputs:
            if last.get(v.id) == i and v.id not in keep and v.id in owner:
                base = owner.pop(v.id)
                readers[base] -= 1
                if readers[base] == 0:
                    alive -= size[base]
    return peak
