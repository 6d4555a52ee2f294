#!/usr/bin/env bash
# One entry point for every mode. Sets up .venv from requirements*.txt on first use.
#
#   ./launch.sh train [--config configs/X.py:size] [--workdir DIR] [--config.a.b=v ...] [--dry_run]
#                     [--show_sharding]                  (print every parameter's placement)
#                     [--num_processes N [--devices_per_process D]]   (N local processes, one job)
#   ./launch.sh eval --config configs/X.py:size --workdir DIR
#   ./launch.sh eval --workdir RUN_DIR --task NAME_OR_JSONL [--fewshot K]   (zero/few-shot scoring)
#   ./launch.sh generate --workdir RUN_DIR (--prompt TEXT | --input_file F) [--strategy beam ...]
#   ./launch.sh test [pytest args]          (slow tests: ./launch.sh test -m slow)
#   ./launch.sh summary --config configs/gpt2.py:small
#   ./launch.sh plan --config configs/gpt2.py:medium --topology v5e-8 [--num_slices 2] [--eval]
#                    [--try model.remat=none,dots,full train.batch_size=16,32]   (TPU memory, FLOPs)
#   ./launch.sh import-hf --from HF_DIR --workdir OUT [--weights_only]
#   ./launch.sh export-hf --workdir RUN_DIR --to OUT   (a run as a Hugging Face directory)
#   ./launch.sh tensorboard [DIR]
#   ./launch.sh sweep experiments/FILE.py [--workdir DIR] [--parallel K] [--slurm] [--max_runs N]
#   ./launch.sh compare experiments/compare_t5_table2.py [--workdir DIR] [--seeds N]
#                       [--scale tiny|small|base] [--parallel K] [--results] [--slurm]
#   ./launch.sh glue --init_from RUN_OR_IMPORT [--tasks cola,mrpc] [--workdir DIR] [--parallel K]
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

setup() {  # install $1 (a requirements file) and this package into $VENV once per their content
  local stamp
  stamp="$VENV/.installed-$(cat "$1" requirements.txt pyproject.toml | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    echo "Setting up $VENV from $1 (first use only)..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -r "$1" >&2
    "$VENV/bin/python" -m pip install -q --no-deps -e . >&2   # `transformer` importable anywhere
    touch "$stamp"
  fi
}

# train [--num_processes N [--devices_per_process D]] ARGS: N processes of one job on this
# machine (coordinator 127.0.0.1:<free port>, CPU collectives over gloo); D fakes D CPU devices
# in each. On clusters, srun/TPU VMs start the processes instead (README: Multi-host).
train() {
  local n=1 d="" args=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --num_processes) n="$2"; shift 2 ;;
      --num_processes=*) n="${1#*=}"; shift ;;
      --devices_per_process) d="$2"; shift 2 ;;
      --devices_per_process=*) d="${1#*=}"; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [ -n "$d" ] && export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$d"
  if [ "$n" = 1 ]; then exec "$VENV/bin/python" -m transformer.train "${args[@]}"; fi
  local port pids=() i rc=0 code
  port="$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  for ((i = 0; i < n; i++)); do
    TRANSFORMER_COORDINATOR="127.0.0.1:$port" TRANSFORMER_NUM_PROCESSES="$n" \
      TRANSFORMER_PROCESS_ID="$i" "$VENV/bin/python" -m transformer.train "${args[@]}" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
  for ((i = 0; i < n; i++)); do  # the first failure stops the others and gives the exit code
    if wait -n; then continue; else code=$?; fi
    if [ "$rc" = 0 ]; then rc=$code; kill "${pids[@]}" 2>/dev/null || true; fi
  done
  wait || true  # a signal to this script ends a `wait -n` early: let every process finish
  return $rc
}

# Start-up noise off at the source (transformer/quiet.py sets the same for `python -m` runs):
# TensorFlow only reads data here, so its C++ INFO lines and the oneDNN notice say nothing.
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-0}"
mode="${1:-help}"
[ $# -gt 0 ] && shift
case "$mode" in
  train)       setup requirements.txt; train "$@" ;;
  eval)        setup requirements.txt; exec "$VENV/bin/python" -m transformer.evaluate "$@" ;;
  generate)    setup requirements.txt; exec "$VENV/bin/python" -m transformer.generate "$@" ;;
  summary)     setup requirements.txt; exec "$VENV/bin/python" -m transformer.summary "$@" ;;
  import-hf)   setup requirements.txt; exec "$VENV/bin/python" -m transformer.import_hf "$@" ;;
  export-hf)   setup requirements.txt; exec "$VENV/bin/python" -m transformer.export "$@" ;;
  sweep)       setup requirements.txt; exec "$VENV/bin/python" -m transformer.sweep "$@" ;;
  compare)     setup requirements.txt; exec "$VENV/bin/python" -m transformer.compare "$@" ;;
  glue)        setup requirements.txt; exec "$VENV/bin/python" -m transformer.glue "$@" ;;
  test)        setup requirements-test.txt
               # two workers, one test file each at a time (module fixtures stay shared)
               # tests/ unless test paths are given (./launch.sh test tests/test_x.py -k name)
               paths=(tests); for a in "$@"; do [[ $a != -* && -e ${a%%::*} ]] && paths=(); done
               # one XLA compilation cache for the run's workers and the subprocesses they
               # start (the same tiny models compile in many files), fresh for each run
               cache="$(mktemp -d -t jax-test-cache.XXXXXX)"
               rc=0; JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$cache}" \
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
                 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
                 "$VENV/bin/python" -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile \
                 -m "not slow" "${paths[@]}" "$@" || rc=$?
               rm -rf "$cache"; exit $rc ;;
  tensorboard) setup requirements.txt
               logdir="${1:-runs}"; port="${PORT:-6006}"
               echo "TensorBoard for $logdir at http://127.0.0.1:$port/"
               exec "$VENV/bin/tensorboard" --logdir "$logdir" --host 127.0.0.1 --port "$port" ;;
  plan)        setup requirements-plan.txt; exec "$VENV/bin/python" -m transformer.plan "$@" ;;
  help|-h|--help) sed -n '2,20p' "$0" ;;
  *) echo "error: unknown mode '$mode'; modes: train eval generate test summary plan import-hf export-hf tensorboard sweep compare glue" >&2
     exit 2 ;;
esac
