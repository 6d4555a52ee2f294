#!/usr/bin/env bash
# One entry point for every mode. Sets up .venv from requirements*.txt on first use.
#
#   ./launch.sh train [--config configs/X.py:size] [--workdir DIR] [--config.a.b=v ...] [--dry_run]
#   ./launch.sh eval --config configs/X.py:size --workdir DIR
#   ./launch.sh test [pytest args]          (slow tests: ./launch.sh test -m slow)
#   ./launch.sh summary --config configs/gpt2.py:small
#   ./launch.sh import-hf --from HF_DIR --workdir OUT
#   ./launch.sh tensorboard [DIR]
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {  # install $1 (a requirements file) into $VENV once per content of the files
  local stamp
  stamp="$VENV/.installed-$(cat "$1" requirements.txt | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "Setting up $VENV from $1 (first use only)..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -r "$1" >&2
    touch "$stamp"
  fi
}

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mode="${1:-help}"
[ $# -gt 0 ] && shift
case "$mode" in
  train)       setup requirements.txt; exec "$VENV/bin/python" -m transformer.train "$@" ;;
  eval)        setup requirements.txt; exec "$VENV/bin/python" -m transformer.evaluate "$@" ;;
  summary)     setup requirements.txt; exec "$VENV/bin/python" -m transformer.summary "$@" ;;
  import-hf)   setup requirements.txt; exec "$VENV/bin/python" -m transformer.hf "$@" ;;
  test)        setup requirements-test.txt
               exec "$VENV/bin/python" -m pytest -q -m "not slow" tests "$@" ;;
  tensorboard) setup requirements.txt
               logdir="${1:-runs}"; port="${PORT:-6006}"
               echo "TensorBoard for $logdir at http://127.0.0.1:$port/"
               exec "$VENV/bin/tensorboard" --logdir "$logdir" --host 127.0.0.1 --port "$port" ;;
  help|-h|--help) sed -n '2,10p' "$0" ;;
  *) echo "error: unknown mode '$mode'; modes: train eval test summary import-hf tensorboard" >&2
     exit 2 ;;
esac
