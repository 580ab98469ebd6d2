"""fuse: group IR nodes into kernel nodes, each computed by one template.

Which nodes form a kernel is each template's own rule, on its record
(kernels/<template>.py: Template.group, the claims, the priority); this pass
walks the graph and asks them. In graph order, each node not yet in a group is
offered to the templates by priority, and the first that builds a group around
it (its anchor) takes it: a Dense or a conv takes the elementwise ops after it
as its epilogue (bias, activation, batch-norm scale/shift, a residual add, a
'valid' pool), softmax / layer_norm / reductions / pools get kernels of their
own, and other elementwise ops group into pointwise kernels. Before any group
forms, templates claim what a group met earlier in graph order must not take:
the elementwise ops computing a Dense's or a reduction's input (a prologue), a
Dense's bias gradient (its B's column sums).

A chain follows single-use values, and takes with each op the producer trees of its other
operands (single-use elementwise ops computed from what the kernel can load), in epilogues,
pointwise kernels and reduction prologues. A cheap elementwise value with several elementwise
readers is copied into each of them first (recompute.py: never a reduction, a matmul or a random
draw; at most MAX_READERS copies), and the copies are kept only when the graph then fuses into
fewer launches (fewest_launches): binary cross-entropy and its gradient in 5 kernels, not 18.

`Fusion` is the state the rules read: users, what is taken, the chain helpers.
An embedding read only by a Dense-like matmul is
gathered by that matmul's kernel (fuse_gather.py); others get a gather kernel of their own. A shift
read only by such a matmul as its A (an RNN backward's h_{t-1}) is read shifted by it (fuse_gather.py).
A matmul of any rank is the matmul template's (batched where B has rank >= 3: kernels/matmul.py).
What fits no template (a grouped conv that is not depthwise, recurrent ops off the scan's limits,
concat, transpose) stays a plain node and runs unfused on torch; nodes computed
from weights alone stay too, and the runtime computes them once per weight
update.
"""

from dataclasses import replace
from functools import cache

from kcomp.ir.cost import launched
from kcomp.ir.graph import Graph, Node, Value
from kcomp.ir.registry import OPS
from kcomp.ir.types import FLOAT_DTYPES
from kcomp.kernels.operands import chain_input, operand_kind
from kcomp.kernels.template import Group
from kcomp.passes.fuse_gather import gathered_embedding, shifted_operand
from kcomp.passes.recompute import recompute
from kcomp.passes.rewrite import dead_code_elimination, topological_order


@cache
def templates_by_priority() -> tuple:
    """Every template's record, in the order they are asked. Read when a graph is first fused,
    not when this module is imported: the records live in the Triton template modules, and a
    process that never fuses (the reference backend) must not import Triton, so that it can
    still choose the interpreter later."""
    from kcomp.kernels.registry import TEMPLATES

    return tuple(sorted(TEMPLATES.values(), key=lambda t: t.priority))


def _is_float(v: Value) -> bool:
    return v.dtype in FLOAT_DTYPES


def weight_only_values(graph: Graph) -> set[int]:
    """Values computed from parameters and constants alone."""
    known = {p.id for p in graph.params}
    for node in graph.nodes:
        if all(v.id in known for v in node.inputs) and "random" not in OPS[node.op].traits:
            known.update(v.id for v in node.outputs)
    return known - {p.id for p in graph.params}


class Fusion:
    """The fusion pass's state, as the templates' grouping rules read it: the methods below, and
    `graph`, `producers` (value id -> node) and `weight_only` (ids of values computed from
    weights alone, which stay unfused when a plan hoists them)."""

    def __init__(self, graph: Graph, hoisted: bool = True):
        self.graph = graph
        self.users = graph.users()
        self.outputs = {v.id for v in graph.outputs}
        # Values from weights alone stay unfused when a plan hoists them (run once per weight
        # change, by torch); a training step recomputes them every run, so there they fuse.
        self.weight_only = weight_only_values(graph) if hoisted else set()
        self.producers = graph.producers()
        self.taken: set[int] = set()  # ids of nodes some group or claim has taken
        self._prologues: dict[int, list[Node]] = {}  # id of an anchor -> its claimed prologue
        self._claimed_outputs: dict[int, list[Node]] = {}  # id of an anchor -> its claimed extra nodes

    # -- what a rule asks -----------------------------------------------------------------------

    def users_of(self, v: Value) -> list[Node]:
        return self.users.get(v.id, [])

    def is_free(self, node: Node) -> bool:
        """Whether no group or claim has taken the node yet."""
        return id(node) not in self.taken

    def claimed_prologue(self, node: Node) -> list[Node]:
        return list(self._prologues.get(id(node), []))

    def claimed_outputs(self, node: Node) -> list[Node]:
        return list(self._claimed_outputs.get(id(node), []))

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

    def absorb_chain(self, group: list[Node], max_loads: int, loaded: set[int] | None = None, widen: bool = False,
                     kind_of=operand_kind) -> Value:
        """Extend `group` with the single-use elementwise ops after it; returns the last value.

        `loaded` are the tensors the generated function already reads (each takes
        one of the template's max_loads slots: E0..E3 for an epilogue, X0..X7
        for a pointwise kernel); the chain stops before it would need more.
        `kind_of(operand, out)`: how the template loads an operand (None: it cannot);
        a pointwise kernel's also loads per-image operands (kernels/operands.py).
        """
        loaded = set() if loaded is None else loaded
        v = group[-1].outputs[0]
        while (user := self.sole_user(v)) is not None and self.is_pointwise(user) and id(user) not in self.taken:
            out = user.outputs[0]
            # A pointwise kernel (widen=True) may grow from one element to many (a loss gradient's
            # 1 / count spread over the batch): what it computed so far is a scalar in every lane.
            grows = widen and all(d == 1 for d in v.shape) and all(operand_kind(o, out) == "scalar" for n in group for o in n.outputs)
            if out.shape != v.shape and not grows:
                break
            # The other operands' producer trees where their loads fit, else one level of them.
            for deep in (True, False):
                feeders = [p for x in user.inputs if x.id != v.id for p in self.operand_producers(x, user, group, deep, kind_of)]
                made = {o.id for n in (*group, *feeders) for o in n.outputs}
                loads = [y for n in (*feeders, user) for y in n.inputs if y.id not in made]
                needs = {x.id for x in loads if not self.is_constant(x)}
                if len(loaded | needs) <= max_loads:
                    break
            if any(kind_of(x, out) is None for x in loads) or len(loaded | needs) > max_loads:
                break
            loaded |= needs
            group.extend(feeders)
            group.append(user)
            v = out
        return v

    def operand_producers(self, x: Value, user: Node, group: list[Node], deep: bool = True,
                          kind_of=operand_kind) -> list[Node]:
        """The single-use elementwise ops computing an operand of `user` from tensors the kernel
        can load itself (relu's gradient mask greater(h, 0)), in graph order: computed in the
        epilogue, they need no launch of their own and their outputs never go through memory.
        deep: the whole tree of such ops (a clipped probability's max, min and log, which
        recompute.py copied into this reader); else only x's own producer. A smaller operand (a bias,
        a scale) joins only through a cast of a tensor of its own shape (mixed precision's 16-bit
        bias), computed where the operand loads."""
        p = self.producers.get(x.id)
        if p is None or id(p) in self.taken or any(p is n for n in group) or not self.is_pointwise(p) or self.sole_user(x) is not user:
            return []
        if x.shape != user.outputs[0].shape and not _casts_in_place(p):
            return []
        tree: list[Node] = []
        for y in p.inputs:
            below = self.operand_producers(y, p, group + tree, kind_of=kind_of) if deep else []
            if not below and kind_of(y, user.outputs[0]) is None:
                return []
            tree.extend(below)
        return [*tree, p]

    def stored_cast(self, node: Node) -> list[Node]:
        """[the cast after node] where it is node's one reader and a free float-to-float cast (mixed
        precision's 16-bit gradient back to float32, or float32 to 16 bits): a template that
        computes node in float32 stores it in the cast's dtype, with no cast kernel; else []."""
        cast = self.sole_user(node.outputs[0])
        if cast is None or cast.op != "cast" or not self.is_free(cast) or not self.is_pointwise(cast):
            return []
        return [cast]

    def loaded_cast(self, anchor: Node, index: int) -> list[Node]:
        """[the cast of a float32 tensor to 16 bits that is the anchor's input `index`] where the
        anchor is its one reader, for a template that casts that operand as it loads it (a Dense's
        or conv's weight under mixed precision: kernels/matmul.py CAST_B); else []. A cast several
        kernels read stays a kernel of its own, computed once per step, not once per reader."""
        cast = self.producers.get(anchor.inputs[index].id)
        if (cast is None or cast.op != "cast" or not self.is_free(cast) or not self.is_pointwise(cast)
                or self.sole_user(cast.outputs[0]) is not anchor):
            return []
        low = cast.outputs[0].dtype
        return [cast] if cast.inputs[0].dtype == "float32" and low in ("bfloat16", "float16") and low == anchor.inputs[0].dtype else []

    def gathered_embedding(self, anchor: Node, prologue: list[Node]) -> Node | None:
        """The embedding whose rows a Dense-like anchor may load through the ids instead of reading
        its output (the rule and why: kcomp/passes/fuse_gather.py), or None."""
        return gathered_embedding(self, anchor, prologue)

    def shifted_operand(self, anchor: Node) -> Node | None:
        """The shift that a Dense-like anchor's A is, when the anchor may read A shifted instead
        (kcomp/passes/fuse_gather.py), or None."""
        return shifted_operand(self, anchor)

    def prologue_chain(self, anchor: Node, max_operands: int, trees: bool = False) -> list[Node]:
        """Single-use elementwise ops that produced the anchor's first input, to apply as it loads
        (reading at most max_operands other tensors). trees: with the producer trees of the
        chain's other operands (operand_producers), for a template whose prologue loads every
        operand as a pointwise body does (a reduction's, not a matmul tile's)."""
        chain: list[Node] = []
        head = anchor  # the chain's first node on the anchor's input path, or the anchor
        v = anchor.inputs[0]
        operands: set[int] = set()
        while (producer := self.producers.get(v.id)) is not None and self.is_pointwise(producer):
            if self.sole_user(v) is not head or producer.outputs[0].shape != v.shape:
                break
            main = chain_input([producer])
            others = [x for x in producer.inputs if x is not main]
            tree = [n for x in others for n in self.operand_producers(x, producer, chain)] if trees else []
            made = {o.id for n in tree for o in n.outputs}
            loads = {y.id: y for n in (*tree, producer) for y in n.inputs if y is not main and y.id not in made}
            if any(operand_kind(x, v) is None for x in loads.values()):
                break
            if len(operands | loads.keys()) > max_operands:
                break
            operands |= loads.keys()
            chain[:0] = [*tree, producer]
            head = producer
            v = main
        source = self.producers.get(v.id)
        if chain and source is not None and _takes_epilogue(source) and self.sole_user(v) is head:
            return []  # the ops right after a Dense or conv are its epilogue, computed once per element
        return chain

    # -- the pass -------------------------------------------------------------------------------

    def group_for(self, node: Node) -> tuple[str, Group] | None:
        """(template, group) of the kernel that `node`, the first free node of its group in graph
        order, starts: the first template, by priority, whose rule builds one. The group's
        anchor may be another node (a bias gradient's sum starts the filter gradient's group)."""
        if node.outputs[0].id in self.weight_only:
            return None
        for template in templates_by_priority():
            group = template.group(self, node) if template.group is not None else None
            if group is not None:
                return template.name, group
        return None

    def claim(self) -> None:
        """The templates' claims over the whole graph, prologues first, then extra outputs."""
        for template in templates_by_priority():
            if template.claim_prologue is not None:
                for node in self.graph.nodes:
                    chain = template.claim_prologue(self, node)
                    if chain:
                        self._prologues[id(node)] = chain
                        self.taken.update(id(n) for n in chain)
        for template in templates_by_priority():
            if template.claim_output is not None:
                for node in self.graph.nodes:
                    extra = template.claim_output(self, node)
                    for n in [] if extra is None else extra if isinstance(extra, list) else [extra]:
                        self._claimed_outputs.setdefault(id(node), []).append(n)
                        self.taken.add(id(n))

    def run(self) -> Graph:
        self.claim()
        groups: dict[int, tuple[str, Group]] = {}  # index of a group's last node -> the group
        index = {id(n): i for i, n in enumerate(self.graph.nodes)}
        for node in self.graph.nodes:
            if id(node) in self.taken:
                continue
            found = self.group_for(node)
            if found is None:
                continue
            template, group = found
            nodes = group.nodes()
            self.taken.update(id(n) for n in nodes)
            groups[index[id(nodes[-1])]] = (template, group)
        fused = []
        for i, node in enumerate(self.graph.nodes):
            if i in groups:
                template, group = groups[i]
                fused.append(kernel_node(template, group, self.producers, self.exported(group.nodes())))
            elif id(node) not in self.taken:
                fused.append(node)
        # A kernel that merged nodes from far apart (a loss and its gradient) sits at its last
        # node's place; values it computes may be read earlier, so restore a topological order.
        graph = topological_order(replace(self.graph, nodes=tuple(fused)))
        return dead_code_elimination(graph)

    def exported(self, group: list[Node]) -> list[Value]:
        """The values a group computes that something outside it reads (or the graph returns)."""
        inside = {id(n) for n in group}
        return [
            v for n in group for v in n.outputs
            if v.id in self.outputs or any(id(u) not in inside for u in self.users.get(v.id, []))
        ]


def _casts_in_place(node: Node) -> bool:
    """A cast between float dtypes of one tensor of its own shape: applied to the loaded operand, it
    lines up with the reader as the operand would (mixed precision's cast of a bias to 16 bits)."""
    return node.op == "cast" and node.inputs[0].shape == node.outputs[0].shape and all(
        _is_float(v) for v in (*node.inputs, *node.outputs))


def _takes_epilogue(node: Node) -> bool:
    """Whether a prologue chain must stop at node's output (Template.takes_epilogue)."""
    return any(t.takes_epilogue is not None and t.takes_epilogue(node) for t in templates_by_priority())


def kernel_node(template: str, group: Group, producers: dict[int, Node], outputs: list[Value] | None = None) -> Node:
    """One kernel node computing `group`, each body node with its role; its outputs are
    `outputs` (by default the group's last value).

    Scalar constants the group reads are copied into the body (they become
    literals in the generated code) instead of being passed in.
    """
    nodes = group.nodes()
    inside = {v.id for n in nodes for v in n.outputs}
    inputs: list[Value] = []
    constants: list[Node] = []
    for n in nodes:
        for v in n.inputs:
            if v.id in inside or v in inputs:
                continue
            producer = producers.get(v.id)
            if producer is not None and producer.op == "constant":
                constants.append(producer)
                inside.add(v.id)
            else:
                inputs.append(v)
    body_nodes = constants + nodes
    roles = ("constant",) * len(constants) + group.roles()
    outs = tuple(outputs) if outputs else (nodes[-1].outputs[0],)
    origins = list(dict.fromkeys(n.origin for n in body_nodes if n.origin))
    body = Graph(f"{template}_body", tuple(inputs), (), tuple(body_nodes), outs)
    return Node("kernel", tuple(inputs), (("body", body), ("roles", roles), ("template", template)), outs, "+".join(origins))


def launches(fused: Graph) -> int:
    """Nodes of a fused graph that run as a launch (a kernel, a torch op, a copying reshape), as a
    plan runs them (kcomp/ir/cost.py: launched)."""
    return len(launched(fused))


def fewest_launches(graph: Graph, hoisted: bool = True) -> Graph:
    """The graph fused as it is, or with its cheap elementwise values copied into their readers
    (kcomp/passes/recompute.py), whichever runs fewer launches (as it is, on a tie)."""
    fused = Fusion(graph, hoisted).run()
    copied = recompute(graph, Fusion(graph, hoisted).is_pointwise)
    if copied is graph:
        return fused
    refused = Fusion(copied, hoisted).run()
    return refused if launches(refused) < launches(fused) else fused


def fuse(graph: Graph) -> Graph:
    return fewest_launches(graph)


def fuse_every_step(graph: Graph) -> Graph:
    """fuse for a graph whose plan runs every node every time (a training or test step: its
    weights change every step, so nothing is hoisted): weight-only values fuse too (a
    regularizer's sum of squares is a reduce kernel, not torch ops)."""
    return fewest_launches(graph, hoisted=False)
