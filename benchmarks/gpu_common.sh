# Shared by the time-boxed GPU scripts (sourced, not run). The caller sets OUT (results
# folder), R (run folder) and DEADLINE (seconds) first. Provides: log, NT (nlp-train, uninstalled), random_head_teacher,
# left (a job's timeout: what is left before the deadline), job, pack.
L=$R/logs  # job logs (tarred at the end: only a few files may sit in OUT)
mkdir -p "$OUT" "$R" "$L"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/gpu.log"; }
NT=(python -c "import sys; from procedures.cli import nlp_train; sys.argv[0] = 'nlp-train'; nlp_train()")
left() { echo $((DEADLINE - SECONDS)); }
job() {  # job NAME TIMEOUT CMD...: run in the background, log to $L/NAME.log
  local name=$1 t=$2; shift 2
  ( timeout "$t" "$@" > "$L/$name.log" 2>&1; echo "$name rc=$?" >> "$OUT/gpu.log" ) &
}
random_head_teacher() {  # random_head_teacher ENC DATA OUT: encoder ENC with a random head for DATA's labels
  python -c "
import sys
from nlp_distill.data.labels import LabelVocab
from nlp_distill.models.transformer import TransformerTokenClassifier
labels = LabelVocab([l.strip() for l in open(sys.argv[2]) if l.strip()])
TransformerTokenClassifier.from_pretrained(sys.argv[1], labels=labels).save_pretrained(sys.argv[3])
" "$1" "$2/labels.txt" "$3"
}
pack() {  # summary table + one tarball of what is small (metrics, logs, configs; no weights or caches)
  python -m benchmarks.gpu_summary "$R" --json "$OUT/summary.json" > "$OUT/summary.md" 2>> "$OUT/gpu.log"
  cat "$OUT/summary.md"
  tar czf "$OUT/runs.tgz" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.pt' --exclude='*.f16' \
      --exclude='teacher_cache' --exclude='checkpoint' --exclude='*.npy' "$R" 2>> "$OUT/gpu.log"
  log "done"
}
# the device's Python has torch and transformers but not seqeval: install the carried wheel
python -c "import seqeval" 2>/dev/null || python -m pip install --no-deps -q .dev/whl/seqeval-*.whl >> "$OUT/gpu.log" 2>&1
log "start: $(python -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda")')"
