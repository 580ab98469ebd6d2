"""Recording the launch: a template's `launch` run with its kernels replaced by recorders, so
the call it would make on a GPU (grid, arguments, constexprs, num_warps, num_stages) is
captured without running anything.
"""

import sys
from dataclasses import dataclass


@dataclass
class Launch:
    """One `kernel[grid](*args, **kwargs)` call made by a template's launch."""

    kernel: object  # the JITFunction
    grid: tuple
    args: tuple
    kwargs: dict


class _Recorder:
    """Stands in for a template kernel: `recorder[grid](*args, **kwargs)` records the call, runs nothing."""

    def __init__(self, kernel, launches: list[Launch]):
        self.kernel = kernel
        self.launches = launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch(self.kernel, tuple(grid), args, kwargs))

        return record

    def __getattr__(self, name):  # anything else a launch reads (arg_names, ...) comes from the kernel
        return getattr(self.kernel, name)


def record_launches(module, inputs, out=None, config=None, precision="tf32") -> list[Launch]:
    """Run module.launch on CPU tensors with its template's kernels replaced by recorders.

    The launch is the template module's (the generated module only binds it); told
    interpret=False it picks the GPU's block sizes although the tensors are on the CPU.
    """
    launches: list[Launch] = []
    template = sys.modules[type(module.BINDING).__module__]
    patched = {name: _Recorder(kernel, launches) for name, kernel in _own_kernels(template).items()}
    if not patched:
        raise RuntimeError(f"{template.__name__} defines no @triton.jit kernel")
    # The recorders are set on the template module itself, which the whole process shares: the
    # launch finds its kernels as that module's globals, so no other way reaches them. This is safe
    # because kcomp compiles kernels one at a time in the calling thread (a build's AOT loop,
    # compiler.compile_ahead_of_time; a parallel build runs one such loop per worker *process*,
    # aot/parallel.py, each with its own modules) and starts no threads that could launch the same
    # template meanwhile; and the finally puts the kernels back even when the launch raises, so the module
    # is as it was once this returns. (Do not record from one thread while another runs models.)
    saved = {name: getattr(template, name) for name in patched}
    try:
        for name, value in patched.items():
            setattr(template, name, value)
        module.launch(*inputs, out=out, config=config, precision=precision, interpret=False)
    finally:
        for name, value in saved.items():
            setattr(template, name, value)
    if not launches:
        raise RuntimeError(f"{module.__name__}.launch launched no kernel")
    return launches


def _own_kernels(module) -> dict[str, object]:
    """The @triton.jit functions a template module defines (its kernels; device helpers too, which
    no launch calls from Python, so standing in for them changes nothing)."""
    from triton.runtime.jit import JITFunction

    return {name: value for name, value in vars(module).items()
            if isinstance(value, JITFunction) and value.fn.__module__ == module.__name__}
