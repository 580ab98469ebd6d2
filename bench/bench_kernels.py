"""Kernel benchmark: kcomp's fused kernels against PyTorch eager, torch.compile and Keras.

  python bench/bench_kernels.py [--quick | --large] [--json FILE]

The cases live in kcomp/bench/kernel_suite.py (`kcomp bench --suite kernels` runs them too, with
the ceilings); this script prints them one by one and rewrites the JSON file after every case,
so a run cut short keeps what it measured.
  dense:  y = act(x @ W + b)            kcomp: one matmul kernel with the epilogue
          eager: torch.addmm (cuBLAS) + the activation; torch.compile of the same function
  conv:   y = maxpool2x2(relu(conv3x3(x) + b)), NHWC / channels_last
          kcomp: one implicit-GEMM kernel pooling in its epilogue
          eager: cuDNN conv2d + separate relu and max_pool2d; torch.compile of the same
Ratios printed are contender time / kcomp time (above 1: kcomp is faster): first with each call's
launch from Python included, then (on a GPU) of the kernels alone, replayed from a CUDA graph.
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

from kcomp.bench import kernel_suite

REHEARSAL_DENSE, REHEARSAL_CONV = [(37, 23, 19)], [(3, 10, 10, 5, 6)]


def ratio(times, key) -> str:
    """contender ms / kcomp ms, or n/a."""
    return f"{times[key] / times['kcomp']:.2f}" if isinstance(times.get(key), float) and isinstance(times.get("kcomp"), float) else "n/a"


def row(label, dtype, shape, times) -> str:
    kcomp_ms = f"{times['kcomp']:9.4f}" if times.get("kcomp") else f"{'checked':>9}"
    line = f"{label:26} {dtype:9} {str(shape):24} {kcomp_ms} {ratio(times, 'eager'):>8} {ratio(times, 'torch.compile'):>9} {ratio(times, 'keras'):>8}"
    graph = times.get("graph")
    if graph:  # kernels only (CUDA graph replay): kcomp's ms and the same ratios
        graph_ms = f"{graph['kcomp']:9.4f}" if isinstance(graph.get("kcomp"), float) else f"{'n/a':>9}"
        line += f" | {graph_ms} {ratio(graph, 'eager'):>8} {ratio(graph, 'torch.compile'):>9}"
    return line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes: the Keras-sized ones")
    parser.add_argument("--large", action="store_true", help="only the shapes --quick leaves out (the large ones)")
    parser.add_argument("--json", help="also write the results here (rewritten after every case)")
    parser.add_argument("--rehearse", action="store_true", help="no GPU: check every case once on the CPU, time nothing")
    args = parser.parse_args(argv)
    if args.rehearse:
        print(f"rehearsal on the CPU under Triton's interpreter: each case checked once, nothing timed; torch {torch.__version__}")
        # The interpreter's bfloat16 arithmetic is not trustworthy: the rehearsal runs float32 only.
        runner = kernel_suite.Runner("cpu", "triton-interpret", bench=lambda fn: (fn(), None)[1], contenders=False)
        cases = kernel_suite.cases(args.quick, REHEARSAL_DENSE, REHEARSAL_CONV, dtypes=("float32",))
    elif not torch.cuda.is_available():
        print("bench_kernels: no CUDA GPU here, nothing measured (the GPU numbers are owed).")
        return 0
    else:
        torch.backends.cuda.matmul.allow_tf32 = True  # eager float32 gets TF32 too: the same precision as kcomp's
        torch.backends.cudnn.allow_tf32 = True
        print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
        runner = kernel_suite.cuda_runner()
        # --large: bfloat16 first, the dtype of the cuBLAS target, so a run cut short has measured it
        large = (kernel_suite.DENSE_SHAPES[kernel_suite.QUICK_DENSE:], kernel_suite.CONV_SHAPES[kernel_suite.QUICK_CONV:])
        cases = kernel_suite.cases(False, *large, dtypes=("bfloat16", "float32")) if args.large else kernel_suite.cases(args.quick)
    print(f"{'case':26} {'dtype':9} {'shape':24} {'kcomp ms':>9} {'eager/k':>8} {'compile/k':>9} {'keras/k':>8}"
          + ("" if args.rehearse else f" | {'graph ms':>9} {'eager/k':>8} {'compile/k':>9}  (kernels only, CUDA graph)"))
    results, failed = [], 0
    chosen_before = set(autotune_choices())
    for label, dtype, shape, run in cases:
        result = {"case": label, "shape": shape, "dtype": dtype}
        try:  # one case failing does not stop the others
            result["ms"] = times = run(runner)
            flops = kernel_suite.work(label, dtype, shape)[0]
            if times.get("kcomp"):
                result["kcomp_tflops"] = flops / times["kcomp"] / 1e9
            if isinstance(times.get("graph", {}).get("kcomp"), float):
                result["kcomp_tflops_graph"] = flops / times["graph"]["kcomp"] / 1e9
            print(row(label, dtype, shape, times))
        except Exception as e:  # noqa: BLE001 - reported and counted
            failed += 1
            result["error"] = f"{type(e).__name__}: {e}"
            print(f"{label:26} {dtype:9} {str(shape):24} FAILED {result['error']}")
        results.append(result)
        if args.json:
            from kcomp.support.files import write_text_atomic

            write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
    if not args.rehearse:  # which tiles autotuning kept (marked TMA: matmul_tma_kernel's; KMAJOR: on K-major copies)
        for key, config in autotune_choices().items():
            if key not in chosen_before and ("|matmul-" in key or "|conv2d-" in key):
                print(f"autotune chose for {key.split('|', 1)[1].rsplit('|', 1)[0]}: {config}")
    print(f"{len(results) - failed} cases passed, {failed} failed")
    return 1 if failed else 0


def autotune_choices() -> dict:
    """The block-size choices this process's autotuning made or read so far (key -> config)."""
    from kcomp.kernels import autotune

    return dict(autotune._choices or {})


if __name__ == "__main__":
    sys.exit(main())
