#!/usr/bin/env bash
# Training speed of `outq train` against the same model, batch and AdamW step written in Python
# with Debian's python3-torch (same LibTorch 1.13), measured back to back on the same machine.
# Usage: bench/compare_train_speed.sh [STEPS] [CONFIG...]   (needs: apt-get install python3-torch)
# Each config runs ROUNDS (default 3) alternating C++ / Python rounds; the medians are printed,
# then the ratio C++ / Python. Set ROUNDS=1 for a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-30}"; shift || true
configs=("$@"); [ ${#configs[@]} -gt 0 ] || configs=(configs/tiny.toml configs/small-25m.toml)
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "python3-torch missing: apt-get install python3-torch" >&2; exit 1; }
export OUTQ_PROGRESS=off OUTQ_LOG=quiet
data_dir=$($outq data --config configs/tiny.toml --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["dir"])')
printf "%-24s %-14s %12s\n" config impl tokens/s
rounds="${ROUNDS:-3}"
median() { /usr/bin/python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "$@"; }
for cfg in "${configs[@]}"; do
  cpp_all=(); py_all=()
  for ((r = 0; r < rounds; r++)); do
    run=$(mktemp -d)
    $outq train --config "$cfg" --set train.run_dir="$run/run" --set train.steps="$steps" --set train.warmup_steps=5 \
      --set train.log_every=5 --set train.eval_every=0 --set train.eval_tokens=2048 --set train.checkpoint_every=0 >/dev/null 2>&1
    # Median of the interval rates after the first interval (warm-up), from metrics.jsonl.
    cpp_all+=("$(/usr/bin/python3 -c 'import json,sys,statistics
r=[json.loads(l) for l in open(sys.argv[1])]
print(statistics.median([x["tokens_per_s"] for x in r if x["type"]=="train"][1:]))' "$run/run/metrics.jsonl")")
    rm -rf "$run"
    py_all+=("$(/usr/bin/python3 bench/train_step_torch.py "$cfg" "$data_dir" --steps "$steps" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens_per_s"])')")
  done
  cpp=$(median "${cpp_all[@]}"); py=$(median "${py_all[@]}")
  printf '%-24s %-14s %12.0f   rounds: %s\n' "$(basename "$cfg")" outq-c++ "$cpp" "${cpp_all[*]%.*}"
  printf '%-24s %-14s %12.0f   rounds: %s\n' "$(basename "$cfg")" python3-torch "$py" "${py_all[*]%.*}"
  /usr/bin/python3 -c "import sys; print(f'{sys.argv[1]:<24} {\"ratio c++/py\":<14} {float(sys.argv[2])/float(sys.argv[3]):12.2f}')" "$(basename "$cfg")" "$cpp" "$py"
done
