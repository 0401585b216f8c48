#!/usr/bin/env bash
# Time-boxed GPU run (~7 minutes on one H100/H200): labeling at scale.
#   1. labeling throughput against HF pipeline("token-classification") on the same GPU and
#      sentences (benchmarks/label_speed.py), one process and K processes sharing the GPU (the
#      store path of `torchrun --nproc_per_node K nlp-train label_unlabeled`);
#   2. benchmarks/scale.py: label 10k, 100k and 1M sentences under torchrun with SPROCS processes
#      on the one GPU; sentences/s, peak RSS (all processes, and the largest one), store size.
# The teacher is the encoder with a random head (throughput does not depend on the head's weights).
# Env: OUT, ENC (plain encoder folder), DATA, DEV (cuda | cpu for a dry run), N, PROCS, SIZES,
# SPROCS, PRECISIONS, LTIME (step 1's time limit), DEADLINE (seconds).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results_gpu}; ENC=${ENC:-.dev/minilm}; DATA=${DATA:-data/wnut16}; DEV=${DEV:-cuda}
N=${N:-20000}; PROCS=${PROCS:-4,8}; PRECISIONS=${PRECISIONS:-fp32}; LTIME=${LTIME:-270}; SIZES=${SIZES:-10000,100000,1000000}; SPROCS=${SPROCS:-8}
DEADLINE=${DEADLINE:-420}; R=${R:-runs/gpu4}
. benchmarks/gpu_common.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.log" 2>&1 || true
random_head_teacher "$ENC" "$DATA" "$R/teacher" || { log "teacher folder failed"; exit 1; }

# 1. one process and K processes against the pipeline, same sentences, same GPU
timeout "$LTIME" python -m benchmarks.label_speed --teacher "$R/teacher" --data_file "$DATA/unlabeled.txt" \
    --n "$N" --device "$DEV" --precisions "$PRECISIONS" --procs "$PROCS" --json "$OUT/label_speed.json" > "$L/label_speed.log" 2>&1
log "label_speed rc=$?"; tail -8 "$L/label_speed.log" | tee -a "$OUT/gpu.log"

# 2. 10k / 100k / 1M sentences under torchrun, SPROCS processes on the one GPU
timeout $(( $(left) - 10 )) python -m benchmarks.scale --teacher "$R/teacher" --data_dir "$DATA" --sizes "$SIZES" \
    --student_epochs 0 --device "$DEV" --procs "$SPROCS" --output_dir "$R/scale" > "$L/scale.log" 2>&1
log "scale rc=$?"; tail -6 "$L/scale.log" | tee -a "$OUT/gpu.log"
cp "$R/scale/scale.json" "$OUT/" 2>/dev/null
tar czf "$OUT/logs.tgz" "$L" "$R"/scale/*.log 2>> "$OUT/gpu.log"
log "done"
