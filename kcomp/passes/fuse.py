"""fuse: group IR nodes into kernel nodes, each computed by one template.

Anchors, in graph order: a matmul with a rank-2 weight (Dense) or a conv2d
starts a group and absorbs the chain of elementwise ops after it (bias,
activation, batch-norm scale/shift, a residual add) as its epilogue; a conv
group also absorbs a following 'valid' max or average pool, so the pre-pool
activation never reaches memory. softmax / log_softmax / layer_norm over the
last axis, reductions over consecutive axes and pooling get kernels of their
own; other elementwise ops group into pointwise kernels.

What fits no template (batched matmul, grouped conv, embedding, recurrent
ops, concat, transpose) stays a plain node and runs unfused on torch; nodes
computed from weights alone stay too, and the runtime computes them once per
weight update.
"""

from dataclasses import replace

from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.ops.grad_support import computed_from
from kcomp.ir.registry import OPS
from kcomp.ir.types import FLOAT_DTYPES, is_static
from kcomp.passes.rewrite import dead_code_elimination, topological_order

MAX_EPILOGUE_OPERANDS = 4  # extra tensors a matmul/conv epilogue may read (template arguments E0..E3)
MAX_PROLOGUE_OPERANDS = 2  # extra tensors a matmul prologue may read (P0, P1)
MAX_POINTWISE_OPERANDS = 8  # tensors a pointwise kernel may read (X0..X7)
MAX_ROW = 16384  # widest row a row kernel (softmax, layer_norm) holds in one block
MAX_EPILOGUE_ROW = 256  # widest Dense output whose softmax the matmul epilogue computes (BN >= N)


def operand_kind(operand: Value, out: Value) -> str | None:
    """How an epilogue operand lines up with the output: scalar, col (last-axis vector), full, or None."""
    if operand.shape == () or all(d == 1 for d in operand.shape):
        return "scalar"
    if operand.shape == out.shape:
        return "full"
    lead, last = operand.shape[:-1], operand.shape[-1:]
    if last == out.shape[-1:] and all(d == 1 for d in lead) and len(operand.shape) <= len(out.shape):
        return "col"
    return None


def _is_float(v: Value) -> bool:
    return v.dtype in FLOAT_DTYPES


def weight_only_values(graph: Graph) -> set[int]:
    """Values computed from parameters and constants alone."""
    known = {p.id for p in graph.params}
    for node in graph.nodes:
        if all(v.id in known for v in node.inputs) and "random" not in OPS[node.op].traits:
            known.update(v.id for v in node.outputs)
    return known - {p.id for p in graph.params}


class _Fuser:
    def __init__(self, graph: Graph, hoisted: bool = True):
        self.graph = graph
        self.users = graph.users()
        self.outputs = {v.id for v in graph.outputs}
        # Values from weights alone stay unfused when a plan hoists them (run once per weight
        # change, by torch); a training step recomputes them every run, so there they fuse.
        self.weight_only = weight_only_values(graph) if hoisted else set()
        self.producers = graph.producers()

    def sole_user(self, v: Value) -> Node | None:
        users = self.users.get(v.id, [])
        if len(users) == 1 and v.id not in self.outputs:
            return users[0]
        return None

    def is_pointwise(self, node: Node) -> bool:
        traits = OPS[node.op].traits
        # What has a lowering (its Triton expression) is computed inline. Of the random ops only
        # dropout has one: its mask is a pure function of (seed, step, element index) that
        # generated code computes as the reference does (kcomp/random.py).
        return (
            "elementwise" in traits
            and node.op != "constant"
            and OPS[node.op].lowering is not None
            and all(_is_float(v) for v in (*node.inputs, *node.outputs))
            and node.outputs[0].id not in self.weight_only
        )

    def is_constant(self, v: Value) -> bool:
        producer = self.producers.get(v.id)
        return producer is not None and producer.op == "constant"  # a literal in the generated code

    def absorb_chain(self, group: list[Node], max_loads: int, loaded: set[int] | None = None, widen: bool = False) -> Value:
        """Extend `group` with the single-use elementwise ops after it; returns the last value.

        `loaded` are the tensors the generated function already reads (each takes
        one of the template's max_loads slots: E0..E3 for an epilogue, X0..X7
        for a pointwise kernel); the chain stops before it would need more.
        """
        loaded = set() if loaded is None else loaded
        v = group[-1].outputs[0]
        while (user := self.sole_user(v)) is not None and self.is_pointwise(user) and id(user) not in self.taken:
            out = user.outputs[0]
            others = [x for x in user.inputs if x.id != v.id]
            feeders = [p for x in others if (p := self.operand_producer(x, user, group)) is not None]
            fed = {p.outputs[0].id for p in feeders}
            inside = {o.id for n in group for o in n.outputs}
            loads = [y for p in feeders for y in p.inputs if y.id not in inside] + [x for x in others if x.id not in fed]
            # A pointwise kernel (widen=True) may grow from one element to many (a loss gradient's
            # 1 / count spread over the batch): what it computed so far is a scalar in every lane.
            grows = widen and all(d == 1 for d in v.shape) and all(operand_kind(o, out) == "scalar" for n in group for o in n.outputs)
            if (out.shape != v.shape and not grows) or any(operand_kind(x, out) is None for x in loads):
                break
            needs = {x.id for x in loads if not self.is_constant(x)}
            if len(loaded | needs) > max_loads:
                break
            loaded |= needs
            group.extend(feeders)
            group.append(user)
            v = out
        return v

    def operand_producer(self, x: Value, user: Node, group: list[Node]) -> Node | None:
        """The single-use elementwise op computing an operand of `user` from tensors the kernel
        can load itself (relu's gradient mask greater(h, 0)): computed in the epilogue, it needs
        no launch of its own and its output never goes through memory."""
        p = self.producers.get(x.id)
        if p is None or id(p) in self.taken or any(p is n for n in group) or not self.is_pointwise(p) or self.sole_user(x) is not user:
            return None
        if x.shape != user.outputs[0].shape or any(operand_kind(y, user.outputs[0]) is None for y in p.inputs):
            return None
        return p

    def matmul_group(self, node: Node) -> list[Node] | None:
        a, b = node.inputs
        if b.rank != 2 or not _is_float(a):
            return None
        group = [*self.prologues.get(id(node), []), node]
        v = self.absorb_chain(group, MAX_EPILOGUE_OPERANDS)
        row = self.sole_user(v)
        if row is not None and row.op in ("softmax", "log_softmax") and id(row) not in self.taken:
            # Dense(activation="softmax"): a row normalized in the epilogue when it fits one tile.
            n = v.shape[-1]
            if row.attrs["axis"] % v.rank == v.rank - 1 and is_static(n) and n <= MAX_EPILOGUE_ROW:
                group.append(row)
        if id(node) in self.column_sums:
            group.append(self.column_sums[id(node)])  # a second output: B's column sums
        return group

    def column_sum_of_b(self, node: Node) -> Node | None:
        """A sum over axis 0 of this Dense-like matmul's B (K, N), when there is one.

        In a training step, B of the weight gradient dW = h^T @ dz is dz, and the
        bias gradient is sum(dz, axis 0): the matmul loads every tile of dz anyway, so
        its kernel also writes the column sums and the bias gradient needs no launch.
        """
        if node.op != "matmul" or not self.is_anchor(node) or node.outputs[0].id in self.weight_only:
            return None
        b = node.inputs[1]
        for user in self.users.get(b.id, []):
            if user.op == "sum" and id(user) not in self.taken and not user.attrs["keepdims"] and _is_float(b):
                axes = user.attrs["axes"]
                if axes is not None and tuple(a % 2 for a in axes) == (0,):
                    return user
        return None

    def prologue_chain(self, matmul: Node, max_operands: int = MAX_PROLOGUE_OPERANDS) -> list[Node]:
        """Single-use elementwise ops that produced a Dense's (or a reduction's) input, to apply as it loads."""
        chain: list[Node] = []
        v = matmul.inputs[0]
        operands: set[int] = set()
        while (producer := self.producers.get(v.id)) is not None and self.is_pointwise(producer):
            if self.sole_user(v) is not (chain[0] if chain else matmul) or producer.outputs[0].shape != v.shape:
                break
            main = chain_input([producer])
            others = {x.id for x in producer.inputs if x is not main}
            if any(operand_kind(x, v) is None for x in producer.inputs if x is not main):
                break
            if len(operands | others) > max_operands:
                break
            operands |= others
            chain.insert(0, producer)
            v = main
        source = self.producers.get(v.id)
        if chain and source is not None and self.is_anchor(source) and self.sole_user(v) is chain[0]:
            return []  # the ops right after a Dense or conv are its epilogue, computed once per element
        return chain

    @staticmethod
    def is_anchor(node: Node) -> bool:
        """A matmul or conv2d whose kernel takes the elementwise ops after it as its epilogue."""
        if node.op == "matmul":
            return node.inputs[1].rank == 2 and _is_float(node.inputs[0])
        return node.op == "conv2d" and node.attrs["groups"] == 1

    def conv_group(self, node: Node) -> list[Node] | None:
        if node.attrs["groups"] != 1:
            return None
        group = [node]
        v = self.absorb_chain(group, MAX_EPILOGUE_OPERANDS)
        chain = {n.outputs[0].id for n in group}
        reads_full = any(
            operand_kind(x, n.outputs[0]) == "full" for n in group[1:] for x in n.inputs if x.id not in chain
        )
        pool = self.sole_user(v)
        if pool is None:
            # Read by others too (a training step's pool and activation gradients): the kernel
            # can still pool, storing the pre-pool activation as a second output, when the
            # windows cover every pixel of it.
            pools = [u for u in self.users.get(v.id, []) if u.op in ("max_pool2d", "avg_pool2d") and id(u) not in self.taken]
            pool = pools[0] if len(pools) == 1 and _windows_cover(pools[0], v) else None
        if pool is not None and pool.op in ("max_pool2d", "avg_pool2d") and pool.attrs["padding"] == "valid" and not reads_full:
            group.append(pool)
        return group

    def xent_group(self, node: Node) -> list[Node]:
        """A softmax cross-entropy with its gradient and the accuracy: one pass over probabilities
        and labels computes all three, the gradient when its per-row factor g does not depend on
        the loss (it does not for Keras's reductions: g is sample_weight / count)."""
        if node.op != "softmax_cross_entropy":
            return [node]
        probs, labels = node.inputs
        group = [node]
        for user in self.users.get(probs.id, []):
            if user.op == "softmax_cross_entropy_grad" and user.inputs[1].id == labels.id and id(user) not in self.taken:
                # Reading only the loss's shape (broadcast_like's template) is no dependence.
                if user.inputs[2].id not in computed_from(self.graph.nodes, {node.outputs[0].id}, through_shapes=False):
                    group.append(user)
                    break
        # The accuracy on the same rows (argmax of p against the labels' class) costs one more store.
        kind = "sparse_categorical" if labels.dtype not in FLOAT_DTYPES else "categorical"
        for user in self.users.get(probs.id, []):
            if (user.op == "correct" and user.attrs["kind"] == kind and id(user) not in self.taken
                    and user.inputs[0].id == labels.id and user.inputs[1].id == probs.id):
                group.append(user)
                break
        return group

    @staticmethod
    def reduce_axes_fit(node: Node) -> bool:
        """A sum / mean / max of floats over consecutive axes: what the reduce template computes."""
        if node.op not in ("sum", "mean", "max") or not _is_float(node.inputs[0]):
            return False
        x, given = node.inputs[0], node.attrs["axes"]
        axes = sorted(a % x.rank for a in (range(x.rank) if given is None else given))
        return bool(axes) and axes == list(range(axes[0], axes[-1] + 1))

    def anchor(self, node: Node) -> tuple[str, list[Node], tuple[str, ...]] | None:
        """(template, group, roles) of the kernel built around `node`, or None.

        roles: each group node's part of the template (kcomp.ir.ops.kernel.ROLES), which codegen
        reads; `_roles` names the anchor and the prologue and extra nodes, the rest is epilogue.
        """
        found = self._group(node)
        if found is None:
            return None
        template, group, anchor, prologue, extra = (*found, (), ())[:5]
        return template, group, _roles(group, anchor, prologue, extra)

    def _group(self, node: Node) -> tuple | None:
        """(template, group, anchor[, prologue nodes[, extra nodes]]) of the kernel built around `node`."""
        op, x = node.op, node.inputs[0] if node.inputs else None
        if node.outputs[0].id in self.weight_only:
            return None
        if op == "optimizer_update":
            # Every parameter in one multi-tensor launch: float32 tensors, each passed in (no literals).
            fits = node.attrs["count"] > 0 and all(v.dtype == "float32" and not self.is_constant(v) for v in node.inputs)
            return ("optimizer", [node], node) if fits else None
        if op == "matmul":
            group = self.matmul_group(node)
            column_sum = self.column_sums.get(id(node))
            return ("matmul", group, node, self.prologues.get(id(node), ()), (column_sum,) if column_sum else ()) if group else None
        if op == "conv2d":
            group = self.conv_group(node)
            return ("conv2d", group, node) if group else None
        last = x.shape[-1] if x is not None and x.rank else None
        row_fits = last is not None and is_static(last) and last <= MAX_ROW
        if op in ("softmax", "log_softmax") and node.attrs["axis"] % x.rank == x.rank - 1 and row_fits:
            return "softmax", [node], node
        if op == "layer_norm" and tuple(a % x.rank for a in node.attrs["axes"]) == (x.rank - 1,) and row_fits:
            return "layer_norm", [node], node
        # -- conv2d backward: conv2d_grad_input / conv2d_grad_filter (kernels/conv2d_grad.py) --
        # The filter gradient also takes the bias gradient sum(dy, axes (0, 1, 2)) as a second
        # output, summed from the dy tiles it loads; the pair is found from whichever comes first.
        if op in ("conv2d_backprop_input", "conv2d_backprop_filter", "sum") and all(_is_float(v) for v in node.inputs):
            if op != "sum" and node.attrs["groups"] != 1:
                return None
            if op == "conv2d_backprop_input":
                return "conv2d_grad_input", [node], node
            dy = node.inputs[1] if op == "conv2d_backprop_filter" else x

            def bias_sum(u: Node) -> bool:  # sum over (N, OH, OW) of an NHWC gradient
                axes = u.attrs["axes"]
                return u.op == "sum" and dy.rank == 4 and not u.attrs["keepdims"] and axes is not None and sorted(a % 4 for a in axes) == [0, 1, 2]

            free = [u for u in self.users.get(dy.id, []) if id(u) not in self.taken and u is not node]
            if op == "conv2d_backprop_filter":
                bias_grad = [u for u in free if bias_sum(u)][:1]
                return "conv2d_grad_filter", [node, *bias_grad], node, (), bias_grad
            wgrads = [u for u in free if u.op == "conv2d_backprop_filter" and u.inputs[1].id == dy.id and u.attrs["groups"] == 1]
            if wgrads and bias_sum(node):
                return "conv2d_grad_filter", [wgrads[0], node], wgrads[0], (), [node]
        # -- end of conv2d backward --
        if self.reduce_axes_fit(node):
            # The elementwise ops after it are its epilogue (a mean scaled and added into a running sum).
            prologue = self.prologues.get(id(node), [])
            group = [*prologue, node]
            self.absorb_chain(group, MAX_EPILOGUE_OPERANDS)
            return "reduce", group, node, prologue
        if op in ("max_pool2d", "avg_pool2d"):
            return "pool2d", [node], node
        if op in ("softmax_cross_entropy", "softmax_cross_entropy_grad") and row_fits:
            group = self.xent_group(node)  # the loss or its gradient, then what reads the same rows
            return "softmax_xent", group, node, (), group[1:]
        if op in ("max_pool2d_grad", "avg_pool2d_grad") and all(_is_float(v) for v in node.inputs):
            # A gather over the windows covering each pixel: no atomics. The elementwise chain
            # after it (relu's gradient mask) is its epilogue, so dz is written once.
            group = [node]
            self.absorb_chain(group, MAX_EPILOGUE_OPERANDS)
            return "pool2d_grad", group, node
        if self.is_pointwise(node) and all(operand_kind(v, node.outputs[0]) for v in node.inputs):
            group = [node]
            first_loads = {v.id for v in node.inputs if not self.is_constant(v)}
            if len(first_loads) > MAX_POINTWISE_OPERANDS:
                return None
            self.absorb_chain(group, MAX_POINTWISE_OPERANDS, first_loads, widen=True)
            return "pointwise", group, node
        return None

    def run(self) -> Graph:
        groups: dict[int, tuple[str, list[Node]]] = {}  # index of a group's last node -> the group
        self.taken = taken = set()  # ids of nodes some group has claimed
        # Prologues first: elementwise ops feeding a Dense belong to its kernel, not to a pointwise one.
        self.prologues = {}
        for node in self.graph.nodes:
            if node.op == "matmul" and node.inputs[1].rank == 2 and _is_float(node.inputs[0]):
                chain = self.prologue_chain(node)
                if chain:
                    self.prologues[id(node)] = chain
                    taken.update(id(n) for n in chain)
        # Reductions likewise compute their input as they load it (a weighted loss before its mean).
        for node in self.graph.nodes:
            if id(node) not in taken and self.reduce_axes_fit(node):
                chain = self.prologue_chain(node, MAX_POINTWISE_OPERANDS - 1)  # the chain's start is a load too
                if chain:
                    self.prologues[id(node)] = chain
                    taken.update(id(n) for n in chain)
        # And bias gradients: the column sums of a weight gradient's B, summed as its tiles load.
        self.column_sums = {}
        for node in self.graph.nodes:
            column_sum = self.column_sum_of_b(node)
            if column_sum is not None:
                self.column_sums[id(node)] = column_sum
                taken.add(id(column_sum))
        index = {id(n): i for i, n in enumerate(self.graph.nodes)}
        for node in self.graph.nodes:
            if id(node) in taken:
                continue
            found = self.anchor(node)
            if found is None:
                continue
            template, group, roles = found
            taken.update(id(n) for n in group)
            groups[index[id(group[-1])]] = (template, group, roles)
        nodes = []
        for i, node in enumerate(self.graph.nodes):
            if i in groups:
                template, group, roles = groups[i]
                nodes.append(kernel_node(template, group, roles, self.producers, self.exported(group)))
            elif id(node) not in taken:
                nodes.append(node)
        g = self.graph
        # A kernel that merged nodes from far apart (a loss and its gradient) sits at its last
        # node's place; values it computes may be read earlier, so restore a topological order.
        graph = topological_order(replace(g, nodes=tuple(nodes)))
        return dead_code_elimination(graph)

    def exported(self, group: list[Node]) -> list[Value]:
        """The values a group computes that something outside it reads (or the graph returns)."""
        inside = {id(n) for n in group}
        return [
            v for n in group for v in n.outputs
            if v.id in self.outputs or any(id(u) not in inside for u in self.users.get(v.id, []))
        ]


def _windows_cover(pool: Node, v: Value) -> bool:
    """Whether a 'valid' pool's windows cover every pixel of its NHWC input v."""
    if pool.attrs["padding"] != "valid" or v.rank != 4 or not all(is_static(d) for d in v.shape[1:3]):
        return False
    return all(
        stride <= size and (extent - size) % stride == 0
        for extent, size, stride in zip(v.shape[1:3], pool.attrs["pool_size"], pool.attrs["strides"])
    )


def chain_input(chain: list[Node]) -> Value:
    """The value a chain of elementwise nodes starts from: the first node's input of the
    chain's shape (the others are operands: scalars, vectors, other tensors)."""
    first = chain[0]
    out = first.outputs[0]
    return next((x for x in first.inputs if x.shape == out.shape), first.inputs[0])


def _roles(group: list[Node], anchor: Node, prologue=(), extra=()) -> tuple[str, ...]:
    """Each group node's role: the anchor, its prologue and extra nodes as given, the rest epilogue."""
    pro, more = {id(n) for n in prologue}, {id(n) for n in extra}
    return tuple("anchor" if n is anchor else "prologue" if id(n) in pro else "extra" if id(n) in more else "epilogue"
                 for n in group)


def kernel_node(template: str, group: list[Node], roles: tuple[str, ...], producers: dict[int, Node],
                outputs: list[Value] | None = None) -> Node:
    """One kernel node computing `group` (`roles`: each node's part of the template); its outputs
    are `outputs` (by default the group's last value).

    Scalar constants the group reads are copied into the body (they become
    literals in the generated code) instead of being passed in.
    """
    inside = {v.id for n in group for v in n.outputs}
    inputs: list[Value] = []
    constants: list[Node] = []
    for n in group:
        for v in n.inputs:
            if v.id in inside or v in inputs:
                continue
            producer = producers.get(v.id)
            if producer is not None and producer.op == "constant":
                constants.append(producer)
                inside.add(v.id)
            else:
                inputs.append(v)
    group = constants + group
    roles = ("constant",) * len(constants) + tuple(roles)
    outs = tuple(outputs) if outputs else (group[-1].outputs[0],)
    origins = list(dict.fromkeys(n.origin for n in group if n.origin))
    body = Graph(f"{template}_body", tuple(inputs), (), tuple(group), outs)
    return Node("kernel", tuple(inputs), (("body", body), ("roles", roles), ("template", template)), outs, "+".join(origins))


def fuse(graph: Graph) -> Graph:
    return _Fuser(graph).run()


def fuse_every_step(graph: Graph) -> Graph:
    """fuse for a graph whose plan runs every node every time (a training or test step: its
    weights change every step, so nothing is hoisted): weight-only values fuse too (a
    regularizer's sum of squares is a reduce kernel, not torch ops)."""
    return _Fuser(graph, hoisted=False).run()
