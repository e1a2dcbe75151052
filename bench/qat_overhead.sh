#!/usr/bin/env bash
# Training-step overhead of the QAT modes over float training: the same config, data and seed,
# modes run back to back in alternating rounds on the same machine; prints the median tokens/s of
# each mode and its step-time ratio to float.
# Usage: bench/qat_overhead.sh [STEPS] [CONFIG]   (ROUNDS=3 by default; MODES="float qat+kurtosis")
# A mode with a "+w<bits>" suffix (e.g. lsq+kurtosis+w4) adds weight QAT at that many bits.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-25}"
cfg="${2:-configs/tiny.toml}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
export OUTQ_PROGRESS=off OUTQ_LOG=quiet
read -r -a modes <<< "${MODES:-float qat+kurtosis}"
rounds="${ROUNDS:-3}"
declare -A rates
for ((r = 0; r < rounds; r++)); do
  for mode in "${modes[@]}"; do
    run=$(mktemp -d)
    qat_mode="${mode%+w[0-9]}"; wbits=0
    [ "$qat_mode" = "$mode" ] || wbits="${mode##*+w}"
    $outq train --config "$cfg" --set train.run_dir="$run/run" --set train.steps="$steps" --set train.warmup_steps=5 \
      --set train.log_every=5 --set train.eval_every=0 --set train.eval_tokens=2048 --set train.checkpoint_every=0 \
      --set train.stats_every=0 --set qat.mode="$qat_mode" --set qat.weight_bits="$wbits" >/dev/null 2>&1
    # Median of the interval rates after the first interval (warm-up), from metrics.jsonl.
    rates[$mode]+="$(python3 -c 'import json,sys,statistics
r=[json.loads(l) for l in open(sys.argv[1])]
print(statistics.median([x["tokens_per_s"] for x in r if x["type"]=="train"][1:]))' "$run/run/metrics.jsonl") "
    rm -rf "$run"
  done
done
base=""
printf "%-14s %10s %16s   rounds\n" mode tokens/s "step time ratio"
for mode in "${modes[@]}"; do
  read -r -a all <<< "${rates[$mode]}"
  med=$(python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' "${all[@]}")
  [ -n "$base" ] || base=$med
  python3 -c "import sys; print(f'{sys.argv[1]:<14} {float(sys.argv[2]):10.0f} {float(sys.argv[3])/float(sys.argv[2]):16.2f}   {sys.argv[4]}')" \
    "$mode" "$med" "$base" "${all[*]%.*}"
done
