#!/usr/bin/env bash
# Tests under compute-sanitizer's memcheck on the GPU machine: which kernel reads or writes out of
# bounds or misaligned, and where (a fault on the GPU otherwise surfaces at some later call).
#   bash bench/gpu_memcheck.sh LOGDIR TEST_ID...     (with .gpu-wheels/ beside the tree)
# Each test runs in its own sanitized process, all at once; each log is LOGDIR/memcheck_N.log.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGDIR=$1
shift
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
SITE=$(mktemp -d)
python3 -m pip install --quiet --no-index --no-deps --target "$SITE" .gpu-wheels/*.whl || exit 1
export PYTHONPATH=$SITE PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 KCOMP_GPU_TESTS=1 KCOMP_CACHE_DIR=$SITE/cache
n=0
for test in "$@"; do
  n=$((n + 1))
  "$SANITIZER" --tool memcheck --print-limit 10 python3 -m pytest -x -q -p no:cacheprovider "$test" \
    > "$LOGDIR/memcheck_$n.log" 2>&1 &
done
wait
