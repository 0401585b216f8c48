#!/usr/bin/env bash
# Time-boxed GPU run (~8 minutes on one H100/H200):
#   0. smoke: the CUDA labeling path (token-budget batches, overlapped copy back) against the CPU's
#      logits on 200 sentences; stop at once if they differ (the run is then cheap to redo);
#   1. labeling throughput vs HF pipeline at batch 64 and 256, fp32 and bf16, best of 2
#      (benchmarks/label_speed.py), alone on the GPU;
#   2. a teacher recipe sweep, 3 seeds each, all in parallel on the GPU: the default recipe (A),
#      lr 5e-5 x 15 epochs (B), lr 2e-4 (C), mean sub-token pooling (D);
#   3. 3-layer transformer students (seeds 1-3, XEPOCHS epochs, 2 augmented copies) cut from the
#      default recipe's seed-1 teacher, started as soon as it ends;
#   4. a summary table (benchmarks/gpu_summary.py) and one tarball of metrics and logs (no weights).
# Env: OUT, ENC (plain encoder folder, e.g. an fp16 copy of the packaged MiniLM), DATA, DEV,
# XEPOCHS, LABEL_N, DEADLINE (seconds: every job is stopped by then, leaving time to pack).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results_gpu}; ENC=${ENC:-.dev/minilm}; DATA=${DATA:-data/wnut16}; DEV=${DEV:-cuda}
XEPOCHS=${XEPOCHS:-8}; LABEL_N=${LABEL_N:-10000}; DEADLINE=${DEADLINE:-540}; R=${R:-runs/gpu2}
. benchmarks/gpu_common.sh

# 0. smoke: CUDA word logits == CPU word logits (fp32)
python - "$ENC" "$DATA" "$DEV" >> "$OUT/gpu.log" 2>&1 <<'EOF' || { log "smoke failed: stopping"; exit 1; }
import sys, numpy as np, torch
from itertools import islice
from nlp_distill.data.labels import LabelVocab
from nlp_distill.data.unlabeled import iter_unlabeled
from nlp_distill.models.transformer import TransformerTokenClassifier
enc, data, dev = sys.argv[1:4]
labels = LabelVocab([l.strip() for l in open(f"{data}/labels.txt") if l.strip()])
torch.manual_seed(0)
clf = TransformerTokenClassifier.from_pretrained(enc, labels=labels)
clf.config = clf.config.replace(precision="fp32")
sents = [s.tokens for s in islice(iter_unlabeled(f"{data}/unlabeled.txt"), 200)] + [["word"] * 300]
cpu = clf.word_logits(sents, 16)
gpu = clf.to(dev).word_logits(sents, 16)
worst = max(float(np.abs(a - b).max()) for a, b in zip(cpu, gpu))
print(f"smoke: {len(sents)} sentences, max |cpu - {dev}| = {worst:.2e}")
assert all(a.shape == b.shape for a, b in zip(cpu, gpu)) and worst < 1e-2, worst
EOF
log "smoke ok"

# 1. labeling throughput, alone on the device
timeout 170 python -m benchmarks.label_speed --teacher "$ENC" --labels "$DATA/labels.txt" \
    --data_file "$DATA/unlabeled.txt" --n "$LABEL_N" --device "$DEV" --batch_sizes 64,256 --repeat 2 \
    --json "$OUT/label_speed.json" > "$L/label_speed.log" 2>&1
log "label_speed rc=$?"; tail -14 "$L/label_speed.log" >> "$OUT/gpu.log"

# 2. teacher recipes x 3 seeds, in parallel
declare -A RECIPE=([A]="" [B]="--learning_rate 5e-5 --num_train_epochs 15" [C]="--learning_rate 2e-4"
                   [D]="--pooling mean")
for r in A B C D; do
  for s in 1 2 3; do
    # shellcheck disable=SC2086
    job "teacher_${r}_s$s" 300 "${NT[@]}" transformer_token --data_dir "$DATA" --output_dir "$R/teacher_${r}_s$s" \
        --overwrite --model_name_or_path "$ENC" --seed "$s" --device "$DEV" ${RECIPE[$r]}
  done
done
sleep 20
while pgrep -f "teacher_A_s1 " > /dev/null; do sleep 2; done
BEST=$R/teacher_A_s1; [ -f "$BEST/metrics.json" ] || BEST=""
log "default-recipe teacher seed 1 done: ${BEST:-failed}"

# 3. 3-layer transformer students from the default recipe's seed-1 teacher (they start as soon as it ends)
if [ -n "$BEST" ]; then
  for s in 1 2 3; do
    job "tkd_L3_s$s" "$(left)" "${NT[@]}" transformer_kd --data_dir "$DATA" --output_dir "$R/tkd_L3_s$s" --overwrite \
        --teacher_model_path "$BEST" --num_student_layers 3 --num_train_epochs "$XEPOCHS" --augment 2 --seed "$s" \
        --device "$DEV"
  done
fi
wait
log "all jobs done"

# 4. summary + one tarball of what is small
pack
