#!/usr/bin/env bash
# QAT from scratch against QAT as fine-tuning of a trained float model (issue: LSQ, weight QAT,
# fine-tuning). Trains every row at its stated token budget (the study's configuration), evaluates
# each under the same columns on the test split, and writes ROOT/finetune.{json,md}.
# Usage: scripts/qat_finetune_results.sh ROOT   (runs already trained or evaluated are reused)
#   STEPS (scratch budget, default 200 = the study's), EVAL_TOKENS (default 32768), THREADS (2).
# Fine-tuning starts from ROOT/float/model with a fresh schedule: lr FT_LR (default 5e-4) with 10%
# warm-up, activation ranges at FT_LR x 4 (the pretraining range learning rate), for 10% and 25%
# of the float model's tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: scripts/qat_finetune_results.sh ROOT}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
steps="${STEPS:-200}"; eval_tokens="${EVAL_TOKENS:-32768}"; threads="${THREADS:-2}"; ft_lr="${FT_LR:-5e-4}"
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
common=(--config configs/study.toml --set train.threads="$threads" --set train.eval_every=0 --set train.stats_every=0)

train() {  # NAME ARGS...: trains ROOT/NAME unless its model exists
  local name="$1"; shift
  [ -f "$root/$name/model/model.safetensors" ] && { echo "[$name] reusing the trained model" >&2; return; }
  rm -rf "$root/$name"
  echo "[$name] training: $*" >&2
  "$outq" train "${common[@]}" --set train.run_dir="$root/$name" "$@" --json > "$root/$name.train.json"
}
ft() {  # NAME FRACTION MODE [ARGS...]: fine-tunes the float model for FRACTION of its steps
  local name="$1" frac="$2" mode="$3"; shift 3
  local n=$(( steps * frac / 100 )); local warm=$(( n / 10 > 1 ? n / 10 : 1 ))
  train "$name" --init-from "$root/float/model" --set qat.mode="$mode" --set train.steps="$n" \
    --set train.warmup_steps="$warm" --set train.lr="$ft_lr" --set qat.clip_lr_scale=4 "$@"
}
mkdir -p "$root"
train float --set qat.mode=float --set train.steps="$steps"
train qat+kurtosis --set qat.mode=qat+kurtosis --set train.steps="$steps"
train lsq --set qat.mode=lsq --set train.steps="$steps"
train lsq+kurtosis --set qat.mode=lsq+kurtosis --set train.steps="$steps"
wq=(--set qat.weight_bits=4 --set qat.weight_init=mse)
for frac in 10 25; do
  ft "ft$frac-qat+kurtosis" "$frac" qat+kurtosis
  ft "ft$frac-lsq+kurtosis" "$frac" lsq+kurtosis --set qat.lsq_init=mse
  ft "ft$frac-lsq+kurtosis-w4" "$frac" lsq+kurtosis --set qat.lsq_init=mse "${wq[@]}"
done

rows=(float qat+kurtosis lsq lsq+kurtosis ft10-qat+kurtosis ft25-qat+kurtosis ft10-lsq+kurtosis ft25-lsq+kurtosis
      ft10-lsq+kurtosis-w4 ft25-lsq+kurtosis-w4)
for name in "${rows[@]}"; do
  model="$root/$name/model"
  if [ -f "$model/clips.json" ]; then recipes=(w16a4-learned w4a4-learned-gptq w8a8-tensor-gptq w3a4-learned-gptq)
  else recipes=(w4a4-tensor-gptq w8a8-tensor-gptq w3a4-tensor-gptq); fi
  [ -f "$model/weight_steps.safetensors" ] && recipes+=(w4a4-learned-lw)
  if [ "$root/$name/eval.json" -nt "$model/model.safetensors" ]; then echo "[$name] reusing eval.json" >&2; continue; fi
  paths=(); for r in "${recipes[@]}"; do paths+=("recipes/$r.toml"); done
  echo "[$name] evaluating float + ${recipes[*]}" >&2
  "$outq" eval --model "$model" --split test --max-tokens "$eval_tokens" --threads "$threads" --json --sweep "${paths[@]}" \
    > "$root/$name/eval.json.tmp"
  mv "$root/$name/eval.json.tmp" "$root/$name/eval.json"
done
python3 scripts/qat_finetune_table.py "$root" "${rows[@]}"
