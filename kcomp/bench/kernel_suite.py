"""The kernels suite: kcomp's fused kernels against PyTorch eager, torch.compile and Keras, each
checked against eager before it is timed, with the achieved TFLOP/s and GB/s as fractions of two
ceilings measured in the same run (a large copy, a large matmul). kcomp's kernels are Triton GPU
kernels: without CUDA the ceilings are measured and the cases are listed as needing a GPU.
bench/bench_kernels.py runs the same cases (and rehearses them under Triton's interpreter)."""

import os
from dataclasses import dataclass
from typing import Callable

import torch

DENSE_SHAPES = [(128, 784, 512), (256, 1024, 1024), (1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192)]
CONV_SHAPES = [(128, 56, 56, 64, 64), (128, 28, 28, 128, 128), (256, 14, 14, 256, 256)]
QUICK_DENSE, QUICK_CONV = 3, 1  # how many of each list --quick takes: the Keras-sized ones (the rest are the large ones)
ACTIVATIONS = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}


@dataclass
class Runner:
    """Where and how cases run: `bench(fn)` gives milliseconds (None: check only, time nothing)."""
    device: str
    backend: str  # kcomp's executor: "triton", or "triton-interpret" for a rehearsal on the CPU
    bench: Callable
    contenders: bool = True  # torch.compile and Keras too (not in a rehearsal: minutes of compiling)
    graph_bench: Callable | None = None  # ms of the GPU's work alone: the calls replayed from a CUDA graph


def cuda_runner() -> Runner:
    import triton.testing

    # bench: median ms of each call as a program makes it, the host's launch included (do_bench records
    # events around every call, so a launch slower than the L2 flush before it shows in the time).
    # graph_bench: the calls captured in a CUDA graph and replayed, so only the kernels' time counts
    # (without the flush: L2 keeps what the previous call left, for every contender alike).
    return Runner("cuda", "triton", lambda fn: triton.testing.do_bench(fn, warmup=5, rep=50, return_mode="median"),
                  graph_bench=lambda fn: triton.testing.do_bench_cudagraph(fn, rep=20, return_mode="median"))


def _checked(runner, fn, ref, tol):
    """Milliseconds of fn, or a refusal when fn's result differs from ref (then not timed)."""
    if fn is None:
        return None
    got = fn()
    if not torch.allclose(got.float(), ref.float(), rtol=tol, atol=tol):
        return f"refused: differs from eager by up to {(got.float() - ref.float()).abs().max().item():.3g}"
    return runner.bench(fn)


def dense_case(runner, m, k, n, activation, dtype, k_major=False):
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    torch_dtype = getattr(torch, dtype)
    model = Sequential([Input(shape=(k,), dtype=dtype), Dense(n, activation=activation, dtype=dtype)])
    model.compile(backend=runner.backend)
    (instruction,) = model.executor().plan.kernels
    layer = model.layers[0]
    w, b = layer.kernel.value.to(runner.device), layer.bias.value.to(runner.device)
    x = torch.randn(m, k, device=runner.device, dtype=torch_dtype)
    out = torch.empty(m, n, device=runner.device, dtype=torch_dtype)
    act = ACTIVATIONS[activation]

    def eager():
        return act(torch.addmm(b, x, w))

    # k_major: the kernel reads W through its strides, here from a transposed copy (K contiguous).
    # Hopper's TF32 warpgroup MMA reads B K-major from shared memory; a row-major (K, N) float32 W
    # made Triton copy B 4 bytes at a time (100 cp.async in the PTX for sm_90 at 128x128x32, against
    # 40 K-major). This case measures whether that is why float32 ran at 0.27-0.39x of cuBLAS.
    w_kernel = w.t().contiguous().t() if k_major else w

    def kcomp():
        return instruction.launch(x, w_kernel, b, out=out)

    keras = _keras_dense(x, w, b, activation) if runner.contenders else None
    return _times(runner, dtype, eager, kcomp, keras)


def conv_case(runner, batch, h, w_, c, f, dtype):
    from kcomp.layers import Conv2D, Input, MaxPooling2D
    from kcomp.models import Sequential

    torch_dtype = getattr(torch, dtype)
    model = Sequential([Input(shape=(h, w_, c), dtype=dtype), Conv2D(f, 3, padding="same", activation="relu", dtype=dtype),
                        MaxPooling2D(2, dtype=dtype)])
    model.compile(backend=runner.backend)
    (instruction,) = model.executor().plan.kernels
    conv = model.layers[0]
    kernel, bias = conv.kernel.value.to(runner.device), conv.bias.value.to(runner.device)
    x = torch.randn(batch, h, w_, c, device=runner.device, dtype=torch_dtype)
    out = torch.empty(batch, h // 2, w_ // 2, f, device=runner.device, dtype=torch_dtype)
    weight = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    x_cl = x.permute(0, 3, 1, 2)  # NCHW view of NHWC data: channels_last memory format

    def eager():  # cuDNN conv + separate relu and pool, back to NHWC (a view)
        y = torch.nn.functional.conv2d(x_cl, weight, bias, padding=1)
        return torch.nn.functional.max_pool2d(torch.relu(y), 2).permute(0, 2, 3, 1)

    def kcomp():
        return instruction.launch(x, kernel, bias, out=out)

    return _times(runner, dtype, eager, kcomp, None)


def _times(runner, dtype, eager, kcomp, keras) -> dict:
    """{contender: ms or refusal}: kcomp must match eager (else the case fails); the others are refused if not."""
    tol = 2e-2 if dtype == "bfloat16" else 1e-2  # TF32 on both sides
    ref = eager()
    torch.testing.assert_close(kcomp().float(), ref.float(), rtol=tol, atol=tol)
    compiled = torch.compile(eager) if runner.contenders else None
    times = {"kcomp": runner.bench(kcomp), "eager": runner.bench(eager), "torch.compile": _checked(runner, compiled, ref, tol),
             "keras": _checked(runner, keras, ref, tol)}
    if runner.graph_bench is not None:
        times["graph"] = {name: _graph_ms(runner, fn) for name, fn in
                          (("kcomp", kcomp), ("eager", eager), ("torch.compile", compiled if isinstance(times["torch.compile"], float) else None))
                          if fn is not None}
    return times


def _graph_ms(runner, fn):
    """Milliseconds of fn's kernels replayed from a CUDA graph, or why it could not be captured."""
    try:
        return runner.graph_bench(fn)
    except Exception as e:  # noqa: BLE001 - a contender that cannot be captured is reported, not timed
        return f"not captured: {type(e).__name__}: {str(e)[:120]}"


def _keras_dense(x, w, b, activation):
    """Keras 3's Dense (torch backend) on the same weights, or None when Keras is not installed."""
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    if keras.backend.backend() != "torch":
        return None
    layer = keras.layers.Dense(w.shape[1], activation=activation, dtype=str(x.dtype).replace("torch.", ""))
    layer.build((None, w.shape[0]))
    layer.set_weights([w.float().cpu().numpy(), b.float().cpu().numpy()])

    def call():
        with torch.no_grad():
            return layer(x)
    return call


def cases(quick: bool, dense=None, conv=None, dtypes=("float32", "bfloat16")):
    """(label, dtype, shape, run(runner) -> times) for each case, in order."""
    from kcomp.kernels.matmul_configs import LARGE_TILES_FROM

    dense = dense or (DENSE_SHAPES[:QUICK_DENSE] if quick else DENSE_SHAPES)
    conv = conv or (CONV_SHAPES[:QUICK_CONV] if quick else CONV_SHAPES)
    for dtype in dtypes:
        for (m, k, n) in dense:
            for activation in ACTIVATIONS:
                yield f"dense {activation}", dtype, [m, k, n], lambda r, m=m, k=k, n=n, a=activation, d=dtype: dense_case(r, m, k, n, a, d)
            if dtype == "float32" and m * n >= LARGE_TILES_FROM:  # the TF32 layout question, at the large shapes
                yield "dense relu, W K-major", dtype, [m, k, n], lambda r, m=m, k=k, n=n, d=dtype: dense_case(r, m, k, n, "relu", d, k_major=True)
        for shape in conv:
            yield "conv+bias+relu+maxpool", dtype, list(shape), lambda r, s=shape, d=dtype: conv_case(r, *s, d)


def work(label, dtype, shape) -> tuple[float, float]:
    """(flops, bytes of HBM traffic at least: inputs read once, output written once) of a case."""
    size = torch.finfo(getattr(torch, dtype)).bits // 8
    if label.startswith("dense"):
        m, k, n = shape
        return 2.0 * m * n * k, float(size * (m * k + k * n + m * n))
    b, h, w, c, f = shape
    return 2.0 * b * h * w * c * f * 9, float(size * (b * h * w * c + 9 * c * f + b * (h // 2) * (w // 2) * f))


def ceilings(device, quick) -> dict:
    """Achievable TFLOP/s and GB/s here, measured: a large float32 copy and two large matmuls, float32
    (TF32 on a GPU) and bfloat16 (a bfloat16 kernel's fraction is of the second: on an H200 its
    tensor cores do twice TF32's FLOP/s)."""
    from kcomp.bench.timing import alternating_medians

    n_copy = (1 << 24 if quick else 1 << 27) if device == "cuda" else (1 << 22 if quick else 1 << 25)
    n_mm = (4096 if quick else 8192) if device == "cuda" else (512 if quick else 2048)
    n_bf16 = n_mm if device == "cuda" else 512  # a CPU without bfloat16 instructions emulates them: slow
    src, dst = torch.randn(n_copy, device=device), torch.empty(n_copy, device=device)
    a, b = torch.randn(n_mm, n_mm, device=device), torch.randn(n_mm, n_mm, device=device)
    a16, b16 = (torch.randn(n_bf16, n_bf16, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = alternating_medians({"copy": lambda: dst.copy_(src), "matmul": lambda: a @ b, "matmul_bf16": lambda: a16 @ b16},
                                  3 if quick else 10, device)
    return {"copy_GBps": 2 * 4 * n_copy / seconds["copy"] / 1e9, "matmul_TFLOPs": 2 * n_mm**3 / seconds["matmul"] / 1e12,
            "matmul_bfloat16_TFLOPs": 2 * n_bf16**3 / seconds["matmul_bf16"] / 1e12,
            "copy_elements": n_copy, "matmul_n": n_mm, "matmul_bfloat16_n": n_bf16}


def matmul_ceiling(ceilings: dict, dtype: str) -> float:
    """The measured matmul TFLOP/s a kernel of this dtype is a fraction of."""
    return ceilings["matmul_bfloat16_TFLOPs"] if dtype == "bfloat16" else ceilings["matmul_TFLOPs"]


def run(opts, needs_gpu: list) -> dict:
    if opts.device == "cuda":  # float32 matmuls get TF32 on every side, kcomp's default precision
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    result = {"ceilings": ceilings(opts.device, opts.quick), "rows": []}
    if opts.device != "cuda":
        needs_gpu.append("kernels: every case (kcomp's kernels are Triton GPU kernels)")
        result["rows"] = [{"case": label, "dtype": dtype, "shape": shape, "status": "needs a GPU"}
                          for label, dtype, shape, _ in cases(opts.quick)]
        return result
    runner = cuda_runner()
    for label, dtype, shape, case in cases(opts.quick):
        row = {"case": label, "dtype": dtype, "shape": shape}
        try:  # one case failing does not stop the others
            row["ms"] = times = case(runner)
            row["status"] = "timed"
            flops, moved = work(label, dtype, shape)
            seconds = times["kcomp"] / 1e3
            row["kcomp_TFLOPs"], row["kcomp_GBps"] = flops / seconds / 1e12, moved / seconds / 1e9
            row["fraction_of_matmul_ceiling"] = row["kcomp_TFLOPs"] / matmul_ceiling(result["ceilings"], dtype)
            row["fraction_of_copy_ceiling"] = row["kcomp_GBps"] / result["ceilings"]["copy_GBps"]
            row["kcomp_speedup"] = {k: v / times["kcomp"] for k, v in times.items() if k != "kcomp" and isinstance(v, float)}
            graph = times.get("graph", {})
            if isinstance(graph.get("kcomp"), float):  # the same ratios, kernels only
                row["kcomp_speedup_graph"] = {k: v / graph["kcomp"] for k, v in graph.items() if k != "kcomp" and isinstance(v, float)}
        except Exception as e:  # noqa: BLE001 - reported in the row
            row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        result["rows"].append(row)
    return result
