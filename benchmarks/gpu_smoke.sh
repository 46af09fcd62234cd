#!/usr/bin/env bash
# A short `ahalab zero` and `ahalab sft` on one device, then their step times and GRPO's rollout/train/sync split
# (metrics.jsonl: time_rollout_s, time_train_s, time_sync_s). Needs no internet: the model is a local directory.
#
#   benchmarks/gpu_smoke.sh [MODEL_DIR]    default MODEL_DIR: `ahalab models path smollm2-135m` (fetched once before,
#                                          e.g. copy ~/.cache/ahalab/models/smollm2-135m to the GPU machine)
#   TINY=1 benchmarks/gpu_smoke.sh         a tiny random Llama made from a config (tests/conftest.py), no model files
#   DEVICE=cpu STEPS=2 TOKENS=16 TINY=1 benchmarks/gpu_smoke.sh    the CPU sanity check (about a minute)
#
# Settings (environment): DEVICE (default cuda when available, else cpu), STEPS (3), TOKENS (max new tokens, 128),
# ENGINE (default: ahalab's, vllm where installed), PYTHON (python), OUT (a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STEPS=${STEPS:-3}
TOKENS=${TOKENS:-128}
OUT=${OUT:-$(mktemp -d /tmp/ahalab-smoke.XXXXXX)}
DEVICE=${DEVICE:-$($PY -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if [ -n "${TINY:-}" ]; then
  MODEL=$OUT/tiny
  PYTHONPATH="$PYTHONPATH:$PWD/tests" $PY -c "import sys; from pathlib import Path; from conftest import build_tiny_model
build_tiny_model(Path(sys.argv[1]))" "$MODEL" >/dev/null
else
  MODEL=${1:-$($PY -m ahalab models path smollm2-135m)}
fi
ENGINE_ARG=(); [ -n "${ENGINE:-}" ] && ENGINE_ARG=(--engine "$ENGINE")
echo "model $MODEL, device $DEVICE, $STEPS steps, $TOKENS tokens, runs in $OUT"

$PY -m ahalab zero --model "$MODEL" --task arithmetic --steps "$STEPS" --prompts-per-step 8 --generations 8 \
  --max-new-tokens "$TOKENS" "${ENGINE_ARG[@]}" --out "$OUT/zero" device="$DEVICE" eval.every=0 keep_checkpoints=0 \
  beta=0.01  # a KL term: every step trains and syncs, even where all rewards tie (a random model's)

$PY - "$OUT/sft.jsonl" <<'PYEOF'
import json, sys
rows = [{"messages": [{"role": "user", "content": f"What is {i} + 7?"},
                      {"role": "assistant", "content": f"{i} + 7 = {i + 7}. <answer>{i + 7}</answer>"}]} for i in range(64)]
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
$PY -m ahalab sft --model "$MODEL" --train "$OUT/sft.jsonl" --out "$OUT/sft" device="$DEVICE" batch_size=16 \
  max_steps="$STEPS" keep_checkpoints=0 'evals=[]'

$PY - "$OUT" <<'PYEOF'
import json, statistics, sys
from pathlib import Path

def rows(run):
    return [r for r in map(json.loads, (Path(sys.argv[1]) / run / "metrics.jsonl").read_text().splitlines())
            if "time_step_s" in r]

print("\nzero: step  total_s  rollout_s  train_s  sync_s")
for r in rows("zero"):
    print(f"      {r['step']:4d}  {r['time_step_s']:7.2f}  {r['time_rollout_s']:9.2f}  {r['time_train_s']:7.2f}"
          f"  {r['time_sync_s']:6.2f}")
z = rows("zero")[1:] or rows("zero")  # the first step includes warm-up
print("      median (after step 1): " + ", ".join(f"{k[5:-2]} {statistics.median(r[k] for r in z):.2f}s"
                                               for k in ("time_step_s", "time_rollout_s", "time_train_s", "time_sync_s")))
print("sft:  step  total_s  tokens/s")
for r in rows("sft"):
    print(f"      {r['step']:4d}  {r['time_step_s']:7.2f}  {r['tokens_per_s']:8.0f}")
PYEOF
