"""Kernel benchmark: kcomp's fused kernels against PyTorch eager, torch.compile and Keras.

  python bench/bench_kernels.py [--quick] [--json FILE]

Cases, each on the same inputs for every contender:
  dense:  y = act(x @ W + b)            kcomp: one matmul kernel with the epilogue
          eager: torch.addmm (cuBLAS) + the activation; torch.compile of the same function
  conv:   y = maxpool2x2(relu(conv3x3(x) + b)), NHWC / channels_last
          kcomp: one implicit-GEMM kernel pooling in its epilogue
          eager: cuDNN conv2d + separate relu and max_pool2d; torch.compile of the same
Ratios printed are contender time / kcomp time (above 1: kcomp is faster).
Needs a CUDA GPU; without one it says so and measures nothing.
"""

import argparse
import json
import sys

import torch

DENSE_SHAPES = [(128, 784, 512), (256, 1024, 1024), (1024, 1024, 1024), (4096, 4096, 4096), (8192, 8192, 8192)]
CONV_SHAPES = [(128, 56, 56, 64, 64), (128, 28, 28, 128, 128), (256, 14, 14, 256, 256)]
ACTIVATIONS = {"relu": torch.relu, "gelu": torch.nn.functional.gelu}


def bench(fn, warmup=5, rep=50) -> float:
    """Median milliseconds of fn() (triton.testing.do_bench: flushes L2 between runs)."""
    import triton.testing

    return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")


def kcomp_dense_launch(k, n, activation, dtype):
    """The generated launch of a one-layer model's only kernel, and its weights."""
    from kcomp.layers import Dense, Input
    from kcomp.models import Sequential

    model = Sequential([Input(shape=(k,), dtype=dtype), Dense(n, activation=activation, dtype=dtype)])
    model.compile(backend="triton")
    plan = model.executor().plan
    (step,) = plan.kernels
    weights = {name: t.cuda() for name, t in model.params().items()}
    return step.launch, weights[f"{model.layers[0].name}/kernel"], weights[f"{model.layers[0].name}/bias"]


def dense_case(m, k, n, activation, dtype):
    torch_dtype = getattr(torch, dtype)
    launch, w, b = kcomp_dense_launch(k, n, activation, dtype)
    x = torch.randn(m, k, device="cuda", dtype=torch_dtype)
    out = torch.empty(m, n, device="cuda", dtype=torch_dtype)
    act = ACTIVATIONS[activation]

    def eager():
        return act(torch.addmm(b, x, w))

    compiled = torch.compile(eager)
    ref = eager()
    got = launch(x, w, b, out=out)
    tol = 2e-2 if dtype == "bfloat16" else 1e-2  # TF32
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    times = {"kcomp": bench(lambda: launch(x, w, b, out=out)), "eager": bench(eager), "torch.compile": bench(compiled)}
    times["keras"] = keras_dense_time(x, w, b, activation)
    return times


def conv_case(batch, h, w_, c, f, dtype):
    from kcomp.layers import Conv2D, Input, MaxPooling2D
    from kcomp.models import Sequential

    torch_dtype = getattr(torch, dtype)
    model = Sequential([Input(shape=(h, w_, c), dtype=dtype), Conv2D(f, 3, padding="same", activation="relu", dtype=dtype), MaxPooling2D(2, dtype=dtype)])
    model.compile(backend="triton")
    (step,) = model.executor().plan.kernels
    conv = model.layers[0]
    kernel, bias = conv.kernel.value.cuda(), conv.bias.value.cuda()
    x = torch.randn(batch, h, w_, c, device="cuda", dtype=torch_dtype)
    out = torch.empty(batch, h // 2, w_ // 2, f, device="cuda", dtype=torch_dtype)
    weight = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    x_cl = x.permute(0, 3, 1, 2)  # NCHW view of NHWC data: channels_last memory format

    def eager():
        y = torch.nn.functional.conv2d(x_cl, weight, bias, padding=1)
        return torch.nn.functional.max_pool2d(torch.relu(y), 2)

    compiled = torch.compile(eager)
    ref = eager().permute(0, 2, 3, 1)
    got = step.launch(x, kernel, bias, out=out)
    tol = 2e-2 if dtype == "bfloat16" else 1e-2
    torch.testing.assert_close(got.float(), ref.float(), rtol=tol, atol=tol)
    return {"kcomp": bench(lambda: step.launch(x, kernel, bias, out=out)), "eager": bench(eager), "torch.compile": bench(compiled), "keras": None}


def keras_dense_time(x, w, b, activation):
    """Keras 3 on its torch backend, when installed (it is not a kcomp dependency)."""
    try:
        import os

        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras
    except ImportError:
        return None
    layer = keras.layers.Dense(w.shape[1], activation=activation, dtype=str(x.dtype).replace("torch.", ""))
    layer.build((None, w.shape[0]))
    layer.set_weights([w.float().cpu().numpy(), b.float().cpu().numpy()])
    with torch.no_grad():
        return bench(lambda: layer(x))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here, nothing measured (the GPU numbers are owed).")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True  # eager float32 gets TF32 too: the same precision as kcomp's
    torch.backends.cudnn.allow_tf32 = True
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    results = []
    dense = DENSE_SHAPES[:3] if args.quick else DENSE_SHAPES
    conv = CONV_SHAPES[:1] if args.quick else CONV_SHAPES
    for dtype in ("float32", "bfloat16"):
        for (m, k, n) in dense:
            for activation in ACTIVATIONS:
                times = dense_case(m, k, n, activation, dtype)
                flops = 2 * m * n * k
                results.append({"case": "dense", "shape": [m, k, n], "activation": activation, "dtype": dtype, "ms": times,
                                "kcomp_tflops": flops / times["kcomp"] / 1e9})
        for shape in conv:
            results.append({"case": "conv+bias+relu+maxpool", "shape": list(shape), "dtype": dtype, "ms": conv_case(*shape, dtype)})
    print(f"{'case':26} {'dtype':9} {'shape':24} {'kcomp ms':>9} {'eager/k':>8} {'compile/k':>9} {'keras/k':>8}")
    for r in results:
        t = r["ms"]
        ratio = lambda key: f"{t[key] / t['kcomp']:.2f}" if t.get(key) else "n/a"  # noqa: E731
        label = r["case"] + (f" {r['activation']}" if "activation" in r else "")
        print(f"{label:26} {r['dtype']:9} {str(r['shape']):24} {t['kcomp']:9.4f} {ratio('eager'):>8} {ratio('torch.compile'):>9} {ratio('keras'):>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
