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

from dataclasses import dataclass
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
        """Whether it runs under Triton's interpreter (its tensors on the CPU)."""
        first = self.out[0] if isinstance(self.out, tuple) else self.out
        return first.device.type == "cpu"


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

    @property
    def module(self) -> str:
        """The module holding the template (what a generated module imports)."""
        return self.launch.__module__

    def __post_init__(self):
        if not (isinstance(self.binding, type) and issubclass(self.binding, Binding)):
            raise TypeError(f"template {self.name!r}: binding must be a subclass of Binding, not {self.binding!r}")
        if not callable(self.launch) or (self.in_place is not None and not callable(self.in_place)):
            raise TypeError(f"template {self.name!r}: launch and in_place must be functions")
