#!/usr/bin/env bash
# The whole story on the packaged data, on CPU: install, build the WNUT-16 split, fine-tune the
# packaged MiniLM teacher, distil it into a small student with tagger_kd's defaults (BiLSTM-CRF,
# packaged GloVe word vectors, teacher-labeled augmented copies of the training set + CRF
# posterior KD; only fewer copies and epochs here, for time), then print teacher vs student
# side by side.
# DEMO_EPOCHS (teacher, default 3) and DEMO_STUDENT_EPOCHS (default 8) trade time for F1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VIRTUAL_ENV:-.venv}"  # the active virtual environment, else ./.venv
bash scripts/install.sh --venv "$VENV"  # what the demo needs, not the test stack
. "$VENV/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nlp-train prepare_wnut16 --output_dir data/wnut16
nlp-train transformer_token --data_dir data/wnut16 --output_dir runs/demo/teacher --overwrite \
    --epochs "${DEMO_EPOCHS:-3}" --seed 42
nlp-train tagger_kd --data_dir data/wnut16 --output_dir runs/demo/student --overwrite \
    --teacher_model_path runs/demo/teacher --augment 2 --epochs "${DEMO_STUDENT_EPOCHS:-8}" --seed 42
echo
echo "Teacher vs distilled student on the WNUT-16 test split (this machine, batch 64):"
nlp-inference compare --model_dir runs/demo/teacher --model_dir runs/demo/student --data_file data/wnut16/test.txt
echo
echo "Models: runs/demo/teacher/model (teacher), runs/demo/student/model (student); metrics.json and run.log beside them."
