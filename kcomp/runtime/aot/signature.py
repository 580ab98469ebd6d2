"""The kernel signature, as triton.jit specialises a launch: each recorded argument's Triton
type, the constexprs, and the divisibility attributes."""

import numbers

import torch

from kcomp.runtime.aot.recording import Launch, _Recorder

# torch dtype -> Triton pointer element type in a kernel signature.
POINTER_TYPES = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64",
    torch.uint8: "u8", torch.bool: "u1",
}
DIVISIBILITY = [["tt.divisibility", 16]]  # what triton.jit attaches to 16-divisible pointers and ints


def _int_type(value: int) -> str:
    if -(2**31) <= value < 2**31:
        return "i32"
    if -(2**63) <= value < 2**63:
        return "i64"
    return "u64"


def _is_tensor_descriptor(value) -> bool:
    from triton.tools.tensor_descriptor import TensorDescriptor

    return isinstance(value, TensorDescriptor)


def specialize(launch: Launch) -> tuple[dict, dict, dict, dict]:
    """(signature, constexprs, attrs, options) for ASTSource/compile from a recorded launch."""
    kernel = launch.kernel
    names = kernel.arg_names
    arg_kwargs = {k: v for k, v in launch.kwargs.items() if k in names}
    options = {k: v for k, v in launch.kwargs.items() if k not in names}
    bound = kernel.signature.bind(*launch.args, **arg_kwargs)
    bound.apply_defaults()
    signature, constexprs, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        name, value = param.name, bound.arguments[param.name]
        if isinstance(value, _Recorder):
            value = value.kernel
        aligned = []
        if param.is_constexpr or value is None:
            kind = "constexpr"
        elif isinstance(value, torch.Tensor):
            if value.dtype not in POINTER_TYPES:
                raise TypeError(f"{kernel.__name__}: argument {name} has dtype {value.dtype}, which has no Triton type")
            kind = "*" + POINTER_TYPES[value.dtype]
            if not param.do_not_specialize_on_alignment and value.data_ptr() % 16 == 0:
                aligned = DIVISIBILITY
        elif _is_tensor_descriptor(value):  # a TMA descriptor (kernels/matmul.py's matmul_tma_kernel)
            kind = f"tensordesc<{POINTER_TYPES[value.base.dtype]}[{', '.join(str(s) for s in value.block_shape)}]>"
        elif isinstance(value, bool):
            kind = "u1"
        elif isinstance(value, numbers.Integral):
            value = int(value)
            specialise = not param.do_not_specialize
            kind = "constexpr" if specialise and value == 1 else _int_type(value)
            if specialise and not param.do_not_specialize_on_alignment and value % 16 == 0:
                aligned = DIVISIBILITY
        elif isinstance(value, numbers.Real):
            kind = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: argument {name}={value!r} has no Triton type")
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = value
        attrs[(index,)] = aligned
    return signature, constexprs, attrs, options
