#!/usr/bin/env bash
# Every GPU benchmark of the repo in one run (< 11 min on one H200-class GPU); reports under $OUT.
#
#   OUT=bench-out bash bench/gpu.sh
#
# Each benchmark runs under its own time limit and writes $OUT/<name>.txt; a missing optional
# dependency (ray, polars, paddle, ultralytics) skips the benchmarks that need it, it does not stop
# the others. $OUT/summary.txt lists what ran, what was skipped and each exit status.
# bench_pipeline needs Ray and real annotator weights on a GPU: it runs only when ray is importable
# and PIPELINE_CONFIG names a profile YAML (pipeline/profiles/moai.yaml with local checkpoints).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false \
    PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK=True RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

has() { "$PY" -c "import $1" >/dev/null 2>&1; }
note() { echo "$*" | tee -a "$OUT/summary.txt"; }
bench() {  # bench NAME SECONDS SCRIPT ARGS...
    local name=$1 limit=$2; shift 2
    echo "== $name ($limit s): $*"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$PY" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    note "$name: rc=$rc in $((SECONDS - started)) s ($*)"
    tail -n 20 "$OUT/$name.txt"
}

: >"$OUT/summary.txt"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" \
    2>&1 | tee -a "$OUT/summary.txt"

bench moai_vs_backbone 180 bench/bench_moai_vs_backbone.py --size 7b --device cuda --steps 5 --warmup 2 \
    --count-flops --json "$OUT/moai_vs_backbone.json"
# MoAI on its own backbone (InternLM2 with PLoRA), 7B shapes, random bf16 weights: batched generation.
bench generate 150 bench/bench_generate.py --size 7b --device cuda --batch-sizes 1,8,32 \
    --json "$OUT/generate.json"
bench psgtr 75 bench/bench_psgtr.py --device cuda --size 490 --images 64 --batch-size 16
bench trainer 60 bench/bench_trainer.py --vision-layers 24 --vision-width 1024 --device cuda
# The moai profile's annotators at the published sizes (the random-weight twin of
# annotators.fake_weights: no real weights needed), MoAI's per-image loop vs ours, bf16.
ANNOTATORS="panoptic owod"
if has ultralytics; then ANNOTATORS="$ANNOTATORS owod_yolo"; else note "owod_yolo: skipped (no ultralytics)"; fi
bench annotators 150 bench/bench_annotators.py --profile full --device cuda --dtype bfloat16 --images 64 \
    --only $ANNOTATORS --workdir "${TMPDIR:-/tmp}/moai-twin"
if has ray && [ -n "${PIPELINE_CONFIG:-}" ]; then
    bench pipeline 45 bench/bench_pipeline.py --config "$PIPELINE_CONFIG" --images 256
else
    note "pipeline: skipped (needs ray and PIPELINE_CONFIG=<profile YAML with local weights>)"
fi
echo "reports in $OUT"
