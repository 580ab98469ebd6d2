"""Kernel benchmark: kcomp's fused kernels against PyTorch eager, torch.compile and Keras.

  python bench/bench_kernels.py [--quick] [--json FILE]

Cases, each on the same inputs for every contender:
  dense:  y = act(x @ W + b)            kcomp: one matmul kernel with the epilogue
          eager: torch.addmm (cuBLAS) + the activation; torch.compile of the same function
  conv:   y = maxpool2x2(relu(conv3x3(x) + b)), NHWC / channels_last
          kcomp: one implicit-GEMM kernel pooling in its epilogue
          eager: cuDNN conv2d + separate relu and max_pool2d; torch.compile of the same
Ratios printed are contender time / kcomp time (above 1: kcomp is faster). The JSON file is
rewritten after every case, so a run cut short keeps what it measured.
Needs a CUDA GPU; without one it says so and measures nothing. --rehearse (bench/gpu_check.sh
--rehearse) runs every case once at a small shape on the CPU under Triton's interpreter and checks
kcomp against eager, timing nothing: the code the GPU run will take, without a GPU.
"""

import argparse
import json
import os
import sys

if "--rehearse" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # read when triton is first imported

import torch

DENSE_SHAPES = [(128, 784, 512), (256, 1024, 1024), (1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192)]
CONV_SHAPES = [(128, 56, 56, 64, 64), (128, 28, 28, 128, 128), (256, 14, 14, 256, 256)]
REHEARSAL_DENSE, REHEARSAL_CONV = [(37, 23, 19)], [(3, 10, 10, 5, 6)]
ACTIVATIONS = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}
REHEARSING = "--rehearse" in sys.argv
DEVICE = "cpu" if REHEARSING else "cuda"


def bench(fn, warmup=5, rep=50) -> float | None:
    """Median milliseconds of fn() (triton.testing.do_bench: flushes L2 between runs); in the
    rehearsal fn runs once and nothing is timed."""
    if REHEARSING:
        fn()
        return None
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def compiled(fn):
    """torch.compile of fn; not in the rehearsal (its first compile takes minutes on a CPU)."""
    return None if REHEARSING else torch.compile(fn)


def timed(fn) -> float | None:
    return None if fn is None else bench(fn)


def kcomp_dense_launch(k, n, activation, dtype):
    """The generated launch of a one-layer model's only kernel, and its weights."""
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    model = Sequential([Input(shape=(k,), dtype=dtype), Dense(n, activation=activation, dtype=dtype)])
    model.compile(backend="triton-interpret" if REHEARSING else "triton")
    plan = model.executor().plan
    (instruction,) = plan.kernels
    weights = {name: t.to(DEVICE) for name, t in model.params().items()}
    return instruction.launch, weights[f"{model.layers[0].name}/kernel"], weights[f"{model.layers[0].name}/bias"]


def dense_case(m, k, n, activation, dtype):
    torch_dtype = getattr(torch, dtype)
    launch, w, b = kcomp_dense_launch(k, n, activation, dtype)
    x = torch.randn(m, k, device=DEVICE, dtype=torch_dtype)
    out = torch.empty(m, n, device=DEVICE, dtype=torch_dtype)
    act = ACTIVATIONS[activation]

    def eager():
        return act(torch.addmm(b, x, w))

    ref = eager()
    got = launch(x, w, b, out=out)
    tol = 2e-2 if dtype == "bfloat16" else 1e-2  # TF32
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    times = {"kcomp": bench(lambda: launch(x, w, b, out=out)), "eager": bench(eager), "torch.compile": timed(compiled(eager))}
    times["keras"] = keras_dense_time(x, w, b, activation)
    return times


def conv_case(batch, h, w_, c, f, dtype):
    from kcomp.layers import Conv2D, Input, MaxPooling2D
    from kcomp.models import Sequential

    torch_dtype = getattr(torch, dtype)
    model = Sequential([Input(shape=(h, w_, c), dtype=dtype), Conv2D(f, 3, padding="same", activation="relu", dtype=dtype), MaxPooling2D(2, dtype=dtype)])
    model.compile(backend="triton-interpret" if REHEARSING else "triton")
    (instruction,) = model.executor().plan.kernels
    conv = model.layers[0]
    kernel, bias = conv.kernel.value.to(DEVICE), conv.bias.value.to(DEVICE)
    x = torch.randn(batch, h, w_, c, device=DEVICE, dtype=torch_dtype)
    out = torch.empty(batch, h // 2, w_ // 2, f, device=DEVICE, dtype=torch_dtype)
    weight = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    x_cl = x.permute(0, 3, 1, 2)  # NCHW view of NHWC data: channels_last memory format

    def eager():
        y = torch.nn.functional.conv2d(x_cl, weight, bias, padding=1)
        return torch.nn.functional.max_pool2d(torch.relu(y), 2)

    ref = eager().permute(0, 2, 3, 1)
    got = instruction.launch(x, kernel, bias, out=out)
    tol = 2e-2 if dtype == "bfloat16" else 1e-2
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    return {"kcomp": bench(lambda: instruction.launch(x, kernel, bias, out=out)), "eager": bench(eager),
            "torch.compile": timed(compiled(eager)), "keras": None}


def keras_dense_time(x, w, b, activation):
    """Keras 3 on its torch backend, when installed (it is not a kcomp dependency)."""
    if REHEARSING:
        return None
    try:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    layer = keras.layers.Dense(w.shape[1], activation=activation, dtype=str(x.dtype).replace("torch.", ""))
    layer.build((None, w.shape[0]))
    layer.set_weights([w.float().cpu().numpy(), b.float().cpu().numpy()])
    with torch.no_grad():
        return bench(lambda: layer(x))


def cases(quick: bool):
    """(label, dtype, shape, run) for each case, in order."""
    dense = REHEARSAL_DENSE if REHEARSING else DENSE_SHAPES[:3] if quick else DENSE_SHAPES
    conv = REHEARSAL_CONV if REHEARSING else CONV_SHAPES[:1] if quick else CONV_SHAPES
    # The interpreter's bfloat16 arithmetic is not trustworthy: the rehearsal runs float32 only.
    for dtype in ("float32",) if REHEARSING else ("float32", "bfloat16"):
        for (m, k, n) in dense:
            for activation in ACTIVATIONS:
                yield f"dense {activation}", dtype, [m, k, n], lambda m=m, k=k, n=n, a=activation, d=dtype: dense_case(m, k, n, a, d)
        for shape in conv:
            yield "conv+bias+relu+maxpool", dtype, list(shape), lambda shape=shape, d=dtype: conv_case(*shape, d)


def row(label, dtype, shape, times) -> str:
    ratio = lambda key: f"{times[key] / times['kcomp']:.2f}" if times.get(key) and times.get("kcomp") else "n/a"  # noqa: E731
    kcomp_ms = f"{times['kcomp']:9.4f}" if times.get("kcomp") else f"{'checked':>9}"
    return f"{label:26} {dtype:9} {str(shape):24} {kcomp_ms} {ratio('eager'):>8} {ratio('torch.compile'):>9} {ratio('keras'):>8}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--json", help="also write the results here (rewritten after every case)")
    parser.add_argument("--rehearse", action="store_true", help="no GPU: check every case once on the CPU, time nothing")
    args = parser.parse_args(argv)
    if not REHEARSING and not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here, nothing measured (the GPU numbers are owed).")
        return 0
    if REHEARSING:
        print(f"rehearsal on the CPU under Triton's interpreter: each case checked once, nothing timed; torch {torch.__version__}")
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # eager float32 gets TF32 too: the same precision as kcomp's
        torch.backends.cudnn.allow_tf32 = True
        print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'case':26} {'dtype':9} {'shape':24} {'kcomp ms':>9} {'eager/k':>8} {'compile/k':>9} {'keras/k':>8}")
    results, failed = [], 0
    for label, dtype, shape, run in cases(args.quick):
        result = {"case": label, "shape": shape, "dtype": dtype}
        try:  # one case failing does not stop the others
            result["ms"] = times = run()
            if label.startswith("dense") and times.get("kcomp"):
                m, k, n = shape
                result["kcomp_tflops"] = 2 * m * n * k / times["kcomp"] / 1e9
            print(row(label, dtype, shape, times))
        except Exception as e:  # noqa: BLE001 - reported and counted
            failed += 1
            result["error"] = f"{type(e).__name__}: {e}"
            print(f"{label:26} {dtype:9} {str(shape):24} FAILED {result['error']}")
        results.append(result)
        if args.json:
            from kcomp.support.files import write_text_atomic

            write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    print(f"{len(results) - failed} cases passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
