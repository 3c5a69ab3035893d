#!/usr/bin/env bash
# One call on a lent GPU machine (device tool, one H100; the whole script stays under 7.5 minutes):
# prints one PASS/FAIL line per check against its threshold, then a tally; exits 1 if any FAIL.
#   (a) tests/test_gpu.py passes, with no test skipped
#   (b) R101-C4, 800 px, 300 proposals, fp16, model only: median latency <= 30 ms (tools/gpu_latency.py)
#   (c) the demo on a 720p video (R101-C4, fp16), end to end: >= 25 FPS (the better of two runs)
#   (d) a training step, R101-C4, batch 2, 800 px, fp16 AMP: <= 0.15 s/iter (tools/train_benchmark.py;
#       fp32 and bf16 printed alongside)
# Logs go to $OUT. First, here: bash tools/fetch_gpu_wheels.sh; then run this with carry=[".whl"].
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

BUDGET_S=${BUDGET_S:-450}  # every step's timeout is cut to what is left of this
FAILS=0
PASSES=0
record() {  # record PASS|FAIL LINE
  echo "$1  $2" | tee -a "$OUT/summary.txt"
  if [[ $1 == PASS ]]; then PASSES=$((PASSES + 1)); else FAILS=$((FAILS + 1)); fi
}
verdict() {  # verdict NAME VALUE OP LIMIT UNIT: OP is <= or >=; an empty VALUE (no figure) fails
  local name=$1 value=$2 op=$3 limit=$4 unit=$5
  if [[ -n "$value" ]] && awk -v v="$value" -v t="$limit" -v op="$op" \
      'BEGIN { exit !((op == "<=") ? (v + 0 <= t + 0) : (v + 0 >= t + 0)) }'; then
    record PASS "$name: $value $unit ($op $limit $unit)"
  else
    record FAIL "$name: ${value:-no figure} ${value:+$unit }($op $limit $unit)"
  fi
}
step() {  # step SECONDS LOG command...: run under the smaller of SECONDS and the budget left
  local limit=$1 log=$2; shift 2
  local left=$((BUDGET_S - SECONDS))
  (( left < limit )) && limit=$left
  if (( limit < 10 )); then echo "not run: the time budget is spent" > "$log"; return 124; fi
  timeout "$limit" "$@" > "$log" 2>&1
}

# (a) the GPU tests
step 200 "$OUT/tests.txt" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
rc=$?
tally=$(tail -n 1 "$OUT/tests.txt")
if (( rc == 0 )) && [[ "$tally" == *passed* && "$tally" != *skipped* ]]; then
  record PASS "gpu tests: $tally"
else
  record FAIL "gpu tests (exit $rc): $tally"
fi

# (b) model-only fp16 latency
step 90 "$OUT/latency.txt" python3 tools/gpu_latency.py --model r101_c4 --min-size 800 --proposals 300 --amp fp16 \
  --iters 50 --warmup 10 --device cuda
verdict "R101-C4 800 px 300 proposals fp16 model-only latency (median of 50)" \
  "$(sed -n 's/^latency median \([0-9.]*\) ms.*/\1/p' "$OUT/latency.txt")" "<=" 30 ms

# (c) the demo at 720p, end to end
step 60 "$OUT/make_demo.txt" python3 tools/make_demo_benchmark.py "$OUT/bench" --frames 300
for run in 1 2; do
  step 60 "$OUT/demo_$run.txt" python3 demo/demo.py checkpoint="$OUT/bench/r101_c4_random.pth" \
    source="$OUT/bench/street_720p.mp4" output="$OUT/bench/annotated.mp4" display=false runtime.device=cuda \
    runtime.amp=fp16 score_thresh=0.0
done
fps=$(sed -n 's/.*: \([0-9.]*\) FPS end to end.*/\1/p' "$OUT"/demo_1.txt "$OUT"/demo_2.txt | sort -g | tail -n 1)
verdict "demo 720p end to end (R101-C4 fp16, better of 2 runs of 300 frames)" "$fps" ">=" 25 FPS
rm -rf "$OUT/bench"  # a 200 MB checkpoint and two videos: not worth bringing back

# (d) the training step with AMP
step 150 "$OUT/train_benchmark.txt" python3 tools/train_benchmark.py model=r101_c4 min_size=800 batch=2 \
  "modes=[fp16,bf16,fp32]" runtime.device=cuda runtime.output_dir="$OUT"
grep -E '^(fp32|bf16|fp16) ' "$OUT/train_benchmark.txt" | sed 's/^/      /'
verdict "R101-C4 training step, batch 2, 800 px, fp16 AMP" \
  "$(awk '$1 == "fp16" { print $2 }' "$OUT/train_benchmark.txt")" "<=" 0.15 s/iter

echo "gpu_check: $PASSES PASS, $FAILS FAIL in ${SECONDS} s on $(head -n 1 "$OUT/gpu.txt")" | tee -a "$OUT/summary.txt"
(( FAILS == 0 ))
