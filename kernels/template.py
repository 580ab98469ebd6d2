"""What kcomp knows about a kernel template, in one record beside its Triton code.

Each template module (kernels/<name>.py) ends with `TEMPLATES = (Template(...),)`: the
template's name (what the fusion pass writes on a kernel node), its launch function, the
binding a generated module fills in, which outputs it may write into a buffer it reads, and
whether it is built on tl.dot. kcomp.kernels.registry collects them; code generation, the
plan, AOT compilation and the tests read the records instead of keeping lists of their own.

A launch is an ordinary function of the template module,

    launch(binding, inputs, out=None, config=None, precision="tf32", interpret=None) -> out

with the same steps everywhere: check the inputs, allocate the outputs (unless `out` gives
them), then run the kernel with a block-size config. The run is decorated with
kcomp.kernels.autotune.tuned, which picks the config when none is given. A generated kernel
module holds only what differs per kernel: its @triton.jit hooks (epilogue, prologue, body)
and one binding (which inputs are which, the hooks, the output dtypes, constants of the body).
"""

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True, kw_only=True)
class Binding:
    """What a generated module tells its template's launch; each template extends it."""

    kernel_id: str  # "<template>-<digest of the IR it computes>": the autotuner's key


@dataclass
class Call:
    """One launch, checked and allocated: what a template's tuned run reads; each template extends it."""

    binding: Binding
    inputs: tuple  # the kernel node's inputs, as given (autotuning keys on their shapes)
    out: object  # the output buffer, or a tuple of them

    @property
    def on_cpu(self) -> bool:
        """Whether its tensors are on the CPU (where Triton's interpreter runs it, with the
        interpreter's block sizes unless the caller asks for a GPU's)."""
        first = self.out[0] if isinstance(self.out, tuple) else self.out
        return first.device.type == "cpu"


@dataclass
class Group:
    """The IR nodes one kernel computes, by role (kcomp.ir.ops.kernel.ROLES), in body order."""

    anchor: object  # the Node the template is built around
    prologue: list = field(default_factory=list)  # elementwise ops computing the anchor's input as it loads
    epilogue: list = field(default_factory=list)  # ops on the anchor's results before the store
    extra: list = field(default_factory=list)  # ops computing further outputs from what the kernel loads
    # An embedding whose rows the anchor loads through its ids (first in body order; last here so
    # that the fields above keep their positions).
    gather: list = field(default_factory=list)

    def nodes(self) -> list:
        return [*self.gather, *self.prologue, self.anchor, *self.epilogue, *self.extra]

    def roles(self) -> tuple[str, ...]:
        return (("gather",) * len(self.gather) + ("prologue",) * len(self.prologue) + ("anchor",)
                + ("epilogue",) * len(self.epilogue) + ("extra",) * len(self.extra))


@dataclass(frozen=True)
class Template:
    name: str  # what the fusion pass writes on a kernel node: kernel(...) {template="matmul"}
    launch: Callable  # launch(binding, inputs, out=None, config=None, precision="tf32", interpret=None)
    binding: type  # its Binding subclass
    # in_place(node, param, views): whether the kernel node may write its output straight into
    # the buffer of `param`, a value it may read (`views`: ids of param and of views of it). It may
    # when every element it reads of param is the one it writes (an elementwise update, a running
    # sum). None: never.
    in_place: Callable | None = None
    tensor_cores: bool = False  # built on tl.dot: its GPU code must use the tensor cores
    # How the fusion pass forms its groups (`fusion`: the pass's state, kcomp.passes.fuse.Fusion):
    # group(fusion, node) -> Group | None, the kernel this template would build around `node`.
    group: Callable | None = None
    # The order templates are asked for a node, lowest first (where two could take it: a sum
    # that is a conv's bias gradient goes to conv2d_grad_filter before reduce sees it).
    priority: int = 50
    # Claims made over the whole graph before any group forms, so that a group met earlier in
    # graph order does not take them: claim_prologue(fusion, node) -> the elementwise ops that
    # compute node's input as it loads, or None; claim_output(fusion, node) -> a node computing
    # a further output from what node's kernel loads (a Dense's bias gradient), a list of such nodes
    # in body order (the bias gradient and its cast), or None.
    claim_prologue: Callable | None = None
    claim_output: Callable | None = None
    # takes_epilogue(node): whether the elementwise ops right after `node` are better computed in
    # its kernel's epilogue (once per output element) than in a later kernel's prologue (a
    # Dense's, or a conv's): a claimed prologue chain stops at such a node's output.
    takes_epilogue: Callable | None = None

    @property
    def module(self) -> str:
        """The module holding the template (what a generated module imports)."""
        return self.launch.__module__

    def __post_init__(self):
        if not (isinstance(self.binding, type) and issubclass(self.binding, Binding)):
            raise TypeError(f"template {self.name!r}: binding must be a subclass of Binding, not {self.binding!r}")
        hooks = (self.in_place, self.group, self.claim_prologue, self.claim_output, self.takes_epilogue)
        if not callable(self.launch) or any(h is not None and not callable(h) for h in hooks):
            raise TypeError(f"template {self.name!r}: launch, in_place, group, the claims and takes_epilogue must be functions")
