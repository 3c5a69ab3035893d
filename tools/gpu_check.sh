#!/usr/bin/env bash
# One call on a lent GPU machine (device tool): GPU tests, then the demo benchmark
# (R101-C4, 800 px, 300 proposals, fp16, 720p video): model-only img/s and end-to-end FPS.
#   run: bash tools/gpu_check.sh      (writes its logs under $OUT, or /tmp/gpu_check)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
pip install -e ".[dev]" -q 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python -m pytest -q tests/test_gpu.py 2>&1 | tail -3 | tee "$OUT/tests.txt"
python tools/make_demo_benchmark.py "$OUT/bench" --frames 300
for run in 1 2; do
  python demo/demo.py checkpoint="$OUT/bench/r101_c4_random.pth" input="$OUT/bench/street_720p.mp4" \
    output="$OUT/bench/annotated.mp4" display=false device=cuda fp16=true 2>&1 | tail -1 | tee -a "$OUT/demo.txt"
done
