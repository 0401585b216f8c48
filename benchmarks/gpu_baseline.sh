#!/usr/bin/env bash
# Time-boxed GPU run (~9 minutes on one H100/H200): what a 2-core CPU cannot do.
#   1. labeling throughput vs HF pipeline on the GPU (benchmarks/label_speed.py), alone on the GPU;
#   2. five teachers (seeds 1-5, default recipe) on the GPU, in parallel; meanwhile gold-only
#      cnn-lstm+crf students (seeds 1-5, default recipe) on the machine's CPU cores;
#   3. distilled cnn-lstm+crf students from the 5-teacher ensemble (default recipe: posterior KD,
#      5 augmented copies; seeds 1-5) and transformer students of 3/2/1 layers cut from the best
#      teacher, on the GPU, in parallel;
#   4. a summary table (benchmarks/gpu_summary.py) and one tarball of metrics and logs (no weights).
# Env: OUT (results folder), ENC (plain encoder folder, e.g. an fp16 copy of the packaged MiniLM),
# DATA, DEV (cuda | cpu for a dry run), TEPOCHS, SEPOCHS (KD students), XEPOCHS (transformer
# students), LABEL_N, SEEDS, DEADLINE (seconds: every job is stopped by then, leaving time to pack).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results_gpu}; ENC=${ENC:-.dev/minilm}; DATA=${DATA:-data/wnut16}; DEV=${DEV:-cuda}
TEPOCHS=${TEPOCHS:-10}; SEPOCHS=${SEPOCHS:-12}; XEPOCHS=${XEPOCHS:-4}; LABEL_N=${LABEL_N:-10000}
SEEDS=${SEEDS:-"1 2 3 4 5"}; DEADLINE=${DEADLINE:-520}; R=${R:-runs/gpu}
. benchmarks/gpu_common.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.log" 2>&1 || true

# 1. labeling throughput, alone on the device
timeout 150 python -m benchmarks.label_speed --teacher "$ENC" --labels "$DATA/labels.txt" \
    --data_file "$DATA/unlabeled.txt" --n "$LABEL_N" --device "$DEV" --json "$OUT/label_speed.json" \
    > "$L/label_speed.log" 2>&1
log "label_speed rc=$?"; tail -8 "$L/label_speed.log" >> "$OUT/gpu.log"

# 2. teachers on the device; gold students on the CPU cores meanwhile
for s in $SEEDS; do
  job "teacher_s$s" 240 "${NT[@]}" transformer_token --data_dir "$DATA" --output_dir "$R/teacher_s$s" --overwrite \
      --model_name_or_path "$ENC" --num_train_epochs "$TEPOCHS" --seed "$s" --device "$DEV"
  job "gold_s$s" "$(left)" env OMP_NUM_THREADS=1 "${NT[@]}" tagger --data_dir "$DATA" --output_dir "$R/gold_s$s" --overwrite --use_crf --seed "$s" --device cpu
done
while pgrep -f "transformer_token" > /dev/null; do sleep 2; done
log "teachers done"
TEACHERS=(); for s in $SEEDS; do [ -f "$R/teacher_s$s/metrics.json" ] && TEACHERS+=("$R/teacher_s$s"); done
BEST=$(python -c "
import json, sys
rs = [(json.load(open(p + '/metrics.json'))['dev']['f1'], p) for p in sys.argv[1:]]
print(max(rs)[1] if rs else '')" "${TEACHERS[@]}")
log "teachers: ${TEACHERS[*]}; best on dev: $BEST"
python -m benchmarks.gpu_summary "$R" > "$OUT/summary.md" 2>> "$OUT/gpu.log"  # kept if the run is cut short

# 3. distilled students from the ensemble, transformer students from the best teacher
if [ "${#TEACHERS[@]}" -gt 0 ]; then
  TARGS=(); for t in "${TEACHERS[@]}"; do TARGS+=(--teacher_model_path "$t"); done
  for s in $SEEDS; do
    job "kd_ens_s$s" "$(left)" "${NT[@]}" tagger_kd --data_dir "$DATA" --output_dir "$R/kd_ens_s$s" --overwrite --use_crf \
        "${TARGS[@]}" --epochs "$SEPOCHS" --seed "$s" --device "$DEV"
  done
  for NL in 3 2 1; do
    job "tkd_L$NL" "$(left)" "${NT[@]}" transformer_kd --data_dir "$DATA" --output_dir "$R/tkd_L$NL" --overwrite \
        --teacher_model_path "$BEST" --num_student_layers "$NL" --num_train_epochs "$XEPOCHS" --seed 1 --device "$DEV"
  done
fi
wait
log "all jobs done"

# 4. summary + one tarball of what is small
pack
