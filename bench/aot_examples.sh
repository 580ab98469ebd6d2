#!/usr/bin/env bash
# Compile every example model that has a compile section as its training step for sm_90
# (kcomp build --train: PTX, cubin and a report of registers, spills and tensor cores each), run as
# the kcomp command runs it (kcomp_launch: a parallel build's fork server started before its imports).
#   bash bench/aot_examples.sh PYTHON OUTDIR
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$1 OUTDIR=$2
"$PYTHON" -c '
import glob
from kcomp import dsl
for path in sorted(glob.glob("examples/*.k")):
    for name, model in dsl.load(path).items():
        if model.compile_config.settings:
            print(path, name)
' | while read -r file name; do
  "$PYTHON" -m kcomp_launch build "$file" --model "$name" --train --target sm_90 -o "$OUTDIR/$name"
done
