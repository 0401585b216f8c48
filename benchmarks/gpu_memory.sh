#!/usr/bin/env bash
# Time-boxed GPU run (~6 minutes on one H100/H200): labeling memory at 1M sentences
# with inference batches padded in rows (pad_rows).
#   1. benchmarks/scale.py: label 10k, 100k and 1M sentences under torchrun with SPROCS processes
#      on the one GPU; sentences/s, peak RSS (all processes, and the largest one), store size;
#   2. benchmarks/label_memory.py: one process on the GPU, RSS chunk by chunk over NMEM sentences
#      (what each of the SPROCS processes labels at 1M), to show when memory grows.
# The teacher is the encoder with a random head (memory and speed do not depend on its weights).
# Env: OUT, ENC (plain encoder folder), DATA, DEV (cuda | cpu for a dry run), SIZES, SPROCS, NMEM,
# DEADLINE (seconds).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results_gpu}; ENC=${ENC:-.dev/minilm}; DATA=${DATA:-data/wnut16}; DEV=${DEV:-cuda}
SIZES=${SIZES:-10000,100000,1000000}; SPROCS=${SPROCS:-8}; NMEM=${NMEM:-125000}
DEADLINE=${DEADLINE:-360}; R=${R:-runs/gpu5}
. benchmarks/gpu_common.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.log" 2>&1 || true
random_head_teacher "$ENC" "$DATA" "$R/teacher" || { log "teacher folder failed"; exit 1; }

timeout $(( $(left) - 100 )) python -m benchmarks.scale --teacher "$R/teacher" --data_dir "$DATA" --sizes "$SIZES" \
    --student_epochs 0 --device "$DEV" --procs "$SPROCS" --output_dir "$R/scale" > "$L/scale.log" 2>&1
log "scale rc=$?"; tail -6 "$L/scale.log" | tee -a "$OUT/gpu.log"
cp "$R/scale/scale.json" "$OUT/" 2>/dev/null

timeout $(( $(left) - 10 )) python -m benchmarks.label_memory --teacher "$R/teacher" --data_file "$DATA/unlabeled.txt" \
    --n "$NMEM" --device "$DEV" --every 8 --json "$OUT/label_memory.json" > "$L/label_memory.log" 2>&1
log "label_memory rc=$?"; tail -4 "$L/label_memory.log" | tee -a "$OUT/gpu.log"
tar czf "$OUT/logs.tgz" "$L" "$R"/scale/*.log 2>> "$OUT/gpu.log"
log "done"
