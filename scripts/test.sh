#!/usr/bin/env bash
# Install everything into ./.venv and run the whole test suite (CPU, offline, seeded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m pytest -q "$@"
