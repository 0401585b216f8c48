#!/usr/bin/env bash
# Time-boxed GPU run (~8 minutes on one H100/H200): transformer students taught
# by a teacher ensemble.
#   1. five teachers with the transformer_token defaults (seeds 1-5), in parallel on the GPU;
#   2. once all five are done, in parallel: 3-layer students (layers 1,3,5 of teacher 1) from the
#      5-teacher ensemble (seeds 1-3) and, for a paired comparison, from teacher 1 alone (seeds
#      1-2); 3-layer students of the bottom layers 0,1,2 from the ensemble (seeds 1-2); and
#      6-layer students (all layers of teacher 1: a single model taught by the ensemble, seeds 1-2);
#   3. a summary table (benchmarks/gpu_summary.py) and one tarball of metrics and logs (no weights).
# Env: OUT (results folder), ENC (plain encoder folder, e.g. an fp16 copy of the packaged MiniLM),
# DATA, DEV (cuda | cpu for a dry run), TEPOCHS, XEPOCHS / XAUG (3-layer students), BEPOCHS / BAUG
# (6-layer students), DEADLINE (seconds: every job is stopped by then, leaving time to pack).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results_gpu}; ENC=${ENC:-.dev/minilm}; DATA=${DATA:-data/wnut16}; DEV=${DEV:-cuda}
TEPOCHS=${TEPOCHS:-10}; XEPOCHS=${XEPOCHS:-8}; XAUG=${XAUG:-3}; BEPOCHS=${BEPOCHS:-6}; BAUG=${BAUG:-2}
DEADLINE=${DEADLINE:-540}; R=${R:-runs/gpu3}
. benchmarks/gpu_common.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.log" 2>&1 || true

# 1. five default-recipe teachers (kept from an earlier call on a still-warm machine)
for s in 1 2 3 4 5; do
  [ -f "$R/teacher_s$s/metrics.json" ] || job "teacher_s$s" 240 "${NT[@]}" transformer_token --data_dir "$DATA" --output_dir "$R/teacher_s$s" --overwrite \
      --model_name_or_path "$ENC" --num_train_epochs "$TEPOCHS" --seed "$s" --device "$DEV" --no_show_progress
done
wait
ENS=$(for s in 1 2 3 4 5; do [ -f "$R/teacher_s$s/metrics.json" ] && printf '%s,' "$R/teacher_s$s"; done)
ENS=${ENS%,}
log "teachers done: ${ENS:-none}"
[ -n "$ENS" ] || { pack; exit 1; }
T1=${ENS%%,*}

# 2. students, all in parallel
xkd() {  # xkd NAME SEED TEACHERS EPOCHS AUG FLAGS...
  local name=$1 s=$2 t=$3 e=$4 a=$5; shift 5
  job "${name}_s$s" "$(left)" "${NT[@]}" transformer_kd --data_dir "$DATA" --output_dir "$R/${name}_s$s" --overwrite \
      --teacher_model_path "$t" --num_train_epochs "$e" --augment "$a" --seed "$s" --device "$DEV" --no_show_progress "$@"
}
if [ "${SECOND:-0}" = 2 ]; then  # a third call: 3 seeds of the 2- and 1-layer students; hidden-state KD
  xkd ensL2bottom 3 "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0,1
  for s in 2 3; do xkd ensL1bottom "$s" "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0; done
  for s in 1 2 3; do xkd ensL3bottomHid "$s" "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0,1,2 --kd_hidden_w 1; done
elif [ "${SECOND:-0}" = 1 ]; then  # the follow-up call: bottom layers from one teacher, 2 and 1 layers, third seeds
  for s in 1 2 3; do xkd oneL3bottom "$s" "$T1" "$XEPOCHS" "$XAUG" --student_layers 0,1,2; done
  xkd ensL3bottom 3 "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0,1,2
  for s in 1 2; do xkd ensL2bottom "$s" "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0,1; done
  xkd ensL1bottom 1 "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0
  xkd ensL6 3 "$ENS" "$BEPOCHS" "$BAUG" --num_student_layers 6
else
  for s in 1 2 3; do xkd ensL3 "$s" "$ENS" "$XEPOCHS" "$XAUG" --num_student_layers 3; done
  for s in 1 2; do xkd oneL3 "$s" "$T1" "$XEPOCHS" "$XAUG" --num_student_layers 3; done
  for s in 1 2; do xkd ensL3bottom "$s" "$ENS" "$XEPOCHS" "$XAUG" --student_layers 0,1,2; done
  for s in 1 2; do xkd ensL6 "$s" "$ENS" "$BEPOCHS" "$BAUG" --num_student_layers 6; done
fi
wait
log "all jobs done"

# 3. summary + one tarball of what is small
pack
