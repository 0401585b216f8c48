#!/usr/bin/env bash
# Install nlp-distill and the test stack into the active virtual environment (else ./.venv) and
# run the whole test suite (CPU, offline, seeded).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VIRTUAL_ENV:-.venv}"
bash scripts/install.sh --venv "$VENV" --test
. "$VENV/bin/activate"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -m pytest -q "$@"
