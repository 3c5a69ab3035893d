#!/usr/bin/env bash
# One call on a lent GPU machine (device tool): GPU tests, the training-step benchmark (R101-C4,
# 800 px, batch 2: s/iter and peak memory in fp32, bf16 and fp16), then the demo benchmark (R101-C4,
# 800 px, 300 proposals, fp16, 720p video): model-only img/s and end-to-end FPS. Logs go to $OUT.
# First, here: bash tools/fetch_gpu_wheels.sh; then run this with carry=[".whl"].
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m pytest -q tests/test_gpu.py 2>&1 | tail -3 | tee "$OUT/tests.txt"   # a failure is logged, not fatal
python3 tools/train_benchmark.py model=r101_c4 min_size=800 batch=2 runtime.device=cuda runtime.output_dir="$OUT" 2>&1 \
  | tee "$OUT/train_benchmark.txt"
python3 tools/make_demo_benchmark.py "$OUT/bench" --frames 300 || exit 1
for run in 1 2; do
  python3 demo/demo.py checkpoint="$OUT/bench/r101_c4_random.pth" source="$OUT/bench/street_720p.mp4" \
    output="$OUT/bench/annotated.mp4" display=false runtime.device=cuda runtime.amp=fp16 score_thresh=0.0 2>&1 \
    | tail -1 | tee -a "$OUT/demo.txt"
done
rm -f "$OUT/bench/r101_c4_random.pth"  # 200 MB: not worth bringing back
