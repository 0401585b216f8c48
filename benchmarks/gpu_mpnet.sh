#!/usr/bin/env bash
# Time-boxed GPU run (three calls on one warm H200, ~11 minutes of device time in all): the
# 12-layer MPNet teacher and every student of it. The encoder travels in two parts
# (benchmarks/device_pack.py: int8 rows, 57 + 49 MiB), one per call; the work starts before the
# second part arrives:
#   call 1 (STAGE=minilm, returns at once, its jobs run on in their own session): MiniLM-L6
#      teachers with the defaults (seeds 1-3: the baseline teachers, and the MiniLM fine-tuned on
#      gold alone), then default BiLSTM-CRF students (tagger_kd, no flags but the vectors file)
#      taught by their ensemble, seeds 1-3;
#   call 2 (STAGE=part): carries the first MPNet part, runs nothing;
#   call 3 (STAGE=mpnet): joins the parts; MPNet teachers at lr 5e-5, batch 32, with and without
#      --head_lr 2e-3 (seeds 1-3 each); the recipe with the best mean dev F1 gives the ensemble, which
#      teaches, in parallel: default BiLSTM-CRF students (seeds 1-3); MPNet students of the bottom
#      6 (seeds 1-3), 4 and 3 layers with hidden-state KD on the copied layers; MiniLM-L6 students
#      through word-level logits (seeds 1-3). Then a summary table, one tarball of metrics and logs
#      (no weights) and the first MPNet-taught BiLSTM-CRF student's model folder.
# Env: STAGE, OUT, MPNET_PARTS (prefix of the part folders), MINILM (fp16 MiniLM folder), GLOVE
# (gzipped GloVe subset from `device_pack glove`), DATA, DEV, TEPOCHS (MPNet teachers), XEPOCHS /
# XAUG / XBATCH (transformer students), DEADLINE (seconds of call 3: every job is stopped by then).
set -u
cd "$(dirname "$0")/.."
STAGE=${STAGE:-mpnet}; MPNET_PARTS=${MPNET_PARTS:-.dev/mpnet}; MINILM=${MINILM:-.dev/minilm}
GLOVE=${GLOVE:-.dev/glove/glove50k.txt.gz}; DATA=${DATA:-.dev/wnut16}; DEV=${DEV:-cuda}
TEPOCHS=${TEPOCHS:-10}; XEPOCHS=${XEPOCHS:-5}; XAUG=${XAUG:-2}; XBATCH=${XBATCH:-32}
DEADLINE=${DEADLINE:-520}; R=${R:-runs/gpu_mpnet}
[ "$STAGE" = minilm ] && OUT=$R/out_minilm  # call 1's log outlives its call's $OUT
. benchmarks/gpu_common.sh
VEC=${VEC:-/tmp/glove50k.txt}
[ -f "$VEC" ] || gunzip -c "$GLOVE" > "$VEC"
Q=(--device "$DEV" --no_show_progress --overwrite)
ens() { for s in 1 2 3; do [ -f "$R/${1}_s$s/metrics.json" ] && printf '%s,' "$R/${1}_s$s"; done; }
kd() {  # kd NAME SEED TEACHERS: the default BiLSTM-CRF student
  job "$1_s$2" "$(left)" "${NT[@]}" tagger_kd --data_dir "$DATA" --output_dir "$R/$1_s$2" "${Q[@]}" --seed "$2" \
      --teacher_model_path "$3" --embedding_file "$VEC"
}

if [ "$STAGE" = minilm ]; then
  DEADLINE=900
  if [ -z "${INNER:-}" ]; then  # run on in a new session: this call returns at once
    INNER=1 STAGE=minilm setsid nohup bash "$0" > "$R/stage_minilm.out" 2>&1 < /dev/null &
    log "MiniLM stage started in the background"; exit 0
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$OUT/gpu.log" 2>&1 || true
  for s in 1 2 3; do
    job "minilm_s$s" 300 "${NT[@]}" transformer_token --data_dir "$DATA" --output_dir "$R/minilm_s$s" "${Q[@]}" \
        --model_name_or_path "$MINILM" --seed "$s"
  done
  wait
  MINI=$(ens minilm); MINI=${MINI%,}
  log "MiniLM teachers: ${MINI:-none}"
  [ -n "$MINI" ] && for s in 1 2 3; do kd kdMiniLM "$s" "$MINI"; done
  wait; log "MiniLM stage done"; exit 0
fi
if [ "$STAGE" = part ]; then ls -la "$MPNET_PARTS"_p*; tail -3 "$R/out_minilm/gpu.log"; exit 0; fi

# STAGE=mpnet
MPNET=${MPNET_DIR:-/tmp/mpnet_fp32}
[ -f "$MPNET/model.safetensors" ] || python -m benchmarks.device_pack unpack "$MPNET_PARTS" "$MPNET" >> "$OUT/gpu.log" 2>&1 \
  || { log "unpack failed"; exit 1; }
log "encoder joined"
for s in 1 2 3; do
  for g in A B; do
    flags=(--lr 5e-5 --batch_size 32); [ $g = B ] && flags+=(--head_lr 2e-3)
    job "mpnet${g}_s$s" 360 "${NT[@]}" transformer_token --data_dir "$DATA" --output_dir "$R/mpnet${g}_s$s" "${Q[@]}" \
        --model_name_or_path "$MPNET" --num_train_epochs "$TEPOCHS" --seed "$s" "${flags[@]}"
  done
done
sleep 5
while pgrep -f "mpnet[AB]_s[123] " > /dev/null; do sleep 2; done
BEST=$(python -c "
import json, statistics, sys
from pathlib import Path
root = Path(sys.argv[1]); means = {}
for g in ('mpnetA', 'mpnetB'):
    f1 = [json.loads(p.read_text())['dev']['f1'] for p in sorted(root.glob(g + '_s*/metrics.json'))]
    if len(f1) == 3: means[g] = statistics.mean(f1)
print(max(means, key=means.get) if means else '')" "$R")
MP=$([ -n "$BEST" ] && ens "$BEST"); MP=${MP%,}
log "MPNet recipe by mean dev F1: ${BEST:-none}; ensemble ${MP:-none}"
if [ -n "$MP" ]; then
  for s in 1 2 3; do kd kdMPNet "$s" "$MP"; done
  xkd() {  # xkd NAME SEED FLAGS...
    local name=$1 s=$2; shift 2
    job "${name}_s$s" "$(left)" "${NT[@]}" transformer_kd --data_dir "$DATA" --output_dir "$R/${name}_s$s" "${Q[@]}" \
        --teacher_model_path "$MP" --num_train_epochs "$XEPOCHS" --augment "$XAUG" --batch_size "$XBATCH" --seed "$s" "$@"
  }
  for s in 1 2 3; do xkd mpnetL6 "$s" --num_student_layers 6 --kd_hidden_w 1; done
  xkd mpnetL4 1 --num_student_layers 4 --kd_hidden_w 1
  xkd mpnetL3 1 --num_student_layers 3 --kd_hidden_w 1
  for s in 1 2 3; do xkd miniFromMPNet "$s" --student_model_name_or_path "$MINILM"; done
fi
wait
while pgrep -f "kdMiniLM_s" > /dev/null && [ "$(left)" -gt 5 ]; do sleep 2; done  # call 1's students
log "all jobs done"
cat "$R/out_minilm/gpu.log" >> "$OUT/gpu.log" 2>/dev/null
[ -f "$R/kdMPNet_s1/model/config.json" ] && tar czf "$OUT/kdMPNet_s1_model.tgz" -C "$R/kdMPNet_s1" model
pack
