#!/usr/bin/env bash
# One GPU session's measurements, in order of value, inside one time budget (seconds, $1, default
# 540): the op suite (bf16, batch 64) and the throughput suite (bf16, batch 128, eager, then
# compiled inference) against Swin-T, then the exactness checks and the triton tests on CUDA.
# Each step gets what is left of the budget, up to its own cap, so a slow step cannot eat the rest;
# rows are written as they are measured. Everything lands in $OUT/gpu_session.tar.gz (+ summary.txt).
#
#   OUT=/tmp/out DINAT_TIMM_COMMIT=$(git rev-parse --short HEAD) bash tools/gpu_session.sh 540
#   DEVICE=cpu QUICK=1 bash tools/gpu_session.sh 300      # dry run on a CPU
#   PLAN=retune ...                                         # after changing the triton kernels or launch candidates
#   PLAN=window ...                                         # the window layout against triton (issue 16), and scaling
set -u
BUDGET=${1:-540}
START=$(date +%s)
OUT=${OUT:-/tmp/dinat_gpu_out}
WORK=$(mktemp -d)
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT" "$WORK/results" "$WORK/logs"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PY:-python3}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # packages carried as wheels (no internet there)
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

step() {  # step NAME CAP COMMAND...
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET - ($(date +%s) - START) - 15))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then echo "== $name: skipped, budget spent" | tee -a "$WORK/summary.txt"; return; fi
    echo "== $name (limit ${limit}s, $(date +%T))" | tee -a "$WORK/summary.txt"
    timeout "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    local rc=$?
    echo "rc=$rc after $(( $(date +%s) - START ))s" | tee -a "$WORK/summary.txt"
    grep -E "passed|failed|error|Error" "$WORK/logs/$name.log" | tail -n 3 | tee -a "$WORK/summary.txt"
}

{ $PY -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null; } | tee -a "$WORK/summary.txt"

BENCH=($PY -m pytest --benchmark-only -q -p no:cacheprovider --device "$DEVICE" --results-dir "$WORK/results")
if [ "${QUICK:-0}" = 1 ]; then  # dry run: small sizes, few rounds
    OPS=(--op-batch-size 2 --rounds 2 --warmup 1 -k "stage3")
    THR=(--batch-size 2 --rounds 2 --warmup 1 --models dinat_mini)
    SCALE=(--scaling-models nat_mini,convnext_tiny --scaling-sizes 64,96 --scaling-rounds 1)
else
    OPS=(--op-batch-size 64 --rounds 20 --warmup 5)
    THR=(--batch-size 128 --rounds 10 --warmup 3 --models dinat_tiny)
    SCALE=(--scaling-batch-size 8 --scaling-rounds 5)
fi

case "${PLAN:-full}" in
full)
    step ops 130 "${BENCH[@]}" benchmarks/test_op_speed.py --op-backends triton,tiled --op-dtypes bf16 "${OPS[@]}"
    step throughput 130 "${BENCH[@]}" benchmarks/test_throughput.py --reference-models swin_tiny_patch4_window7_224 \
        --dtypes bf16 --backends auto,tiled "${THR[@]}"
    step compiled 170 "${BENCH[@]}" benchmarks/test_throughput.py -k infer --compile 1 \
        --reference-models swin_tiny_patch4_window7_224 --dtypes bf16 --backends auto,tiled "${THR[@]}"
    step checks 110 $PY tools/gpu_checks.py --device "$DEVICE"
    step tests 100 env DINAT_TRITON_AUTOTUNE=0 $PY -m pytest tests/test_triton_backend.py -q -x -p no:cacheprovider
    ;;
retune)  # after changing the kernels or their launch candidates: speed first, then quick exactness checks
    export TRITON_PRINT_AUTOTUNING=1
    step ops 100 "${BENCH[@]}" benchmarks/test_op_speed.py --op-backends triton --op-dtypes bf16 "${OPS[@]}"
    step throughput 80 "${BENCH[@]}" benchmarks/test_throughput.py --reference-models swin_tiny_patch4_window7_224 \
        --dtypes bf16 --backends auto "${THR[@]}"
    step compiled 150 "${BENCH[@]}" benchmarks/test_throughput.py --compile 1 \
        --reference-models swin_tiny_patch4_window7_224 --dtypes bf16 --backends auto,tiled "${THR[@]}" \
        -k "infer or (train and not tiled)"
    step checks 60 $PY tools/gpu_checks.py --device "$DEVICE" --quick
    step candidates 45 $PY -m pytest tests/test_triton_backend.py -q -x -p no:cacheprovider -k every_launch
    ;;
window)  # DiNAT's k×k-sub-grid layers as window attention against triton, then how the cost grows with the image
    step ops 110 "${BENCH[@]}" benchmarks/test_op_speed.py --op-backends triton,window,tiled --op-dtypes bf16 "${OPS[@]}"
    step throughput 100 "${BENCH[@]}" benchmarks/test_throughput.py --reference-models swin_tiny_patch4_window7_224 \
        --dtypes bf16 --backends auto,window:auto "${THR[@]}"
    step compiled 140 "${BENCH[@]}" benchmarks/test_throughput.py --compile 1 \
        --reference-models swin_tiny_patch4_window7_224 --dtypes bf16 --backends auto,window:auto "${THR[@]}"
    step scaling 100 "${BENCH[@]}" benchmarks/test_scaling.py --dtypes bf16 "${SCALE[@]}"
    step checks 50 $PY tools/gpu_checks.py --device "$DEVICE" --quick
    ;;
esac

cp "$WORK/summary.txt" "$OUT/summary.txt"
tar -czf "$OUT/gpu_session.tar.gz" -C "$WORK" results logs summary.txt
echo "done in $(( $(date +%s) - START ))s"
