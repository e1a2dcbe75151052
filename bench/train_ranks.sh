#!/usr/bin/env bash
# Data-parallel training speed on this machine: 1 rank x 2 threads against 2 ranks x 1 thread
# (gradient all-reduce overlapped with the backward pass, and not), on the tiny and small-25m
# configs, a few steps each. Prints one row per run: tokens/s of the training steps and the share
# of the step spent finishing the all-reduce. Usage: bench/train_ranks.sh [steps] [outq binary]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-6}"
outq="${2:-build/apps/outq/outq}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
common="--set train.steps=$steps --set train.warmup_steps=1 --set train.eval_every=0 --set train.eval_tokens=4096
        --set train.stats_every=0 --set train.checkpoint_every=0 --set train.log_every=1"
printf '%-11s %-22s %9s %12s %14s\n' config layout tokens/s "step (ms)" "all-reduce"
for config in tiny small-25m; do
  for layout in "1x2" "2x1" "2x1-no-overlap"; do
    case "$layout" in
      1x2) args="--set train.threads=2" ;;
      2x1) args="--nproc 2 --set train.threads=1" ;;
      2x1-no-overlap) args="--nproc 2 --set train.threads=1 --set train.dist_overlap=false" ;;
    esac
    # shellcheck disable=SC2086
    OUTQ_LOG=quiet OUTQ_PROGRESS=off "$outq" train --config "configs/$config.toml" $common $args \
      --set train.run_dir="$out/$config-$layout" --json > "$out/$config-$layout.json" 2> "$out/$config-$layout.log"
    python3 - "$out/$config-$layout.json" "$config" "$layout" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["step_seconds"]
step = s["forward"] + s["backward"] + s["optimizer"] + s["allreduce"]
tokens_per_step = r["tokens"] / r["steps"]
print(f"{sys.argv[2]:<11} {sys.argv[3]:<22} {tokens_per_step / step:9.0f} {1e3 * step:12.0f} {100 * s['allreduce'] / step:13.1f}%")
PY
  done
done
