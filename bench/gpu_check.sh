#!/usr/bin/env bash
# Everything kcomp checks on a GPU, in one call of under 8 minutes (the device tool's machine):
#   1. install kcomp without network (wheels carried in .gpu-wheels/, see the README),
#   2. the GPU tests (tests/test_gpu.py: compiled kernels and CUDA graphs against the reference),
#   3. the kernel benchmark (bench/bench_kernels.py --quick),
#   4. the training benchmark (bench/bench_training.py: MLP and CNN steps/s against torch eager,
#      torch.compile and Keras when installed).
# Results go to $OUT (the device tool brings them back): gpu.txt, install.log, gpu_tests.log, bench.log, bench.json, training.log.
set -uo pipefail
OUT=${OUT:-/tmp/kcomp-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 KCOMP_CACHE_DIR="$OUT/cache"
nvidia-smi > "$OUT/gpu.txt" 2>&1
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1
{
  # .gpu-wheels/ holds lark, pytest and a kcomp wheel built from this tree (README: "On a GPU").
  python -m pip install --no-index --no-deps .gpu-wheels/*.whl ||
    python -m pip install --no-index --no-deps --no-build-isolation -e .
} > "$OUT/install.log" 2>&1 || echo "install failed: see install.log" | tee -a "$OUT/gpu.txt"
KCOMP_GPU_TESTS=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu_tests.log"
timeout 150 python bench/bench_kernels.py --quick --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
timeout 120 python bench/bench_training.py --steps 200 --backend triton 2>&1 | tee "$OUT/training.log"
