#!/usr/bin/env bash
# When a GPU is lent: one prepared run of the checks the README's accelerator figures need.
#
#   bash experiments/accelerator_check.sh [OUT_DIR]      (default accelerator_check/)
#
# 1. installs the CUDA build of the pinned jax into .venv (requirements.txt's 0.10.2);
# 2. cuDNN vs XLA attention parity: tests/models/test_attention.py's 'cudnn' rows (skipped on
#    CPU) and attention.choose on this GPU;
# 3. bfloat16 train-step benchmarks through experiments/benchmark.py: GPT-2 small and medium at
#    1024, BERT base at 512, T5 base at 512 / 114, with tokens/s, MFU against the chip's
#    published peak (monitoring/perf.py) and memory, as JSON in OUT_DIR.
# NOT RUN YET: no GPU was lent to the session that wrote it (issue 24); the figures it writes
# are the first hardware measurements of this code on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-accelerator_check}"
VENV="${VENV:-.venv}"
mkdir -p "$OUT"
"$VENV/bin/python" -m pip install -q "jax[cuda12]==0.10.2"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
"$VENV/bin/python" -c "import jax; print(jax.devices())" | tee -a "$OUT/gpu.txt"

# 2. parity (the conftest keeps tests on CPU unless told otherwise)
JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}" "$VENV/bin/python" -m pytest \
  -q tests/models/test_attention.py -k cudnn 2>&1 | tee "$OUT/parity.txt"
"$VENV/bin/python" - <<'PY' | tee -a "$OUT/parity.txt"
import jax
from transformer.models import attention
d = jax.devices()[0]
cap = tuple(int(x) for x in d.compute_capability.split('.'))
for dtype in ('bfloat16', 'float32'):
  print(dtype, attention.choose('auto', platform='gpu', dtype=dtype, head_dim=64,
                                lengths=(1024,), capability=cap))
PY

# 3. bfloat16 train steps (20 timed steps after 3 warm-up ones)
run() {  # NAME FAMILY SIZE SEQ [--config.k=v ...]
  local name="$1" family="$2" size="$3" seq="$4"; shift 4
  "$VENV/bin/python" experiments/benchmark.py --families "$family" --sizes "$size" \
    --seq_len "$seq" --dtype bfloat16 --out "$OUT/$name.json" "$@" | tee "$OUT/$name.txt"
}
run gpt2_small decoder small 1024
run gpt2_medium decoder medium 1024
run bert_base encoder base 512
run t5_base encoder_decoder base 512 --config.data.targets_len=114
echo "results in $OUT/ (target: >= 45% MFU for GPT-2 medium)"
