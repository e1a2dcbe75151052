#!/usr/bin/env bash
# SmoothQuant on a float model: every combination of W8A8 / W4A8 / W4A4, static per-tensor and
# dynamic per-token activations, RTN and GPTQ weights, without and with SmoothQuant (perplexity, KL
# and top-1 agreement against the float model on the test split), and the alpha sweep (0.4 .. 0.9)
# on a few recipes. Writes OUT/table.json, OUT/alpha.json and OUT/smoothquant.md.
# Usage: scripts/smoothquant_results.sh MODEL_DIR OUT_DIR
#   ALPHA (default 0.6, the method default) for the table; ALPHAS and ALPHA_RECIPES for the sweep; THREADS (2);
#   MAX_TOKENS (32768 test tokens, 0 = the whole split).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/smoothquant_results.sh MODEL_DIR OUT_DIR}"
out="${2:?usage: scripts/smoothquant_results.sh MODEL_DIR OUT_DIR}"
alpha="${ALPHA:-0.6}"
alphas="${ALPHAS:-0.4 0.5 0.6 0.7 0.8 0.9}"
alpha_recipes="${ALPHA_RECIPES:-w8a8-tensor-rtn w4a8-tensor-gptq w4a4-tensor-gptq}"
threads="${THREADS:-2}" max_tokens="${MAX_TOKENS:-32768}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
mkdir -p "$out/recipes"
eval_sweep() {  # eval_sweep OUT.json RECIPE...
  [ -s "$1" ] && { echo "reusing $1 (delete it to redo)" >&2; return; }
  local dest="$1"; shift
  "$outq" eval --model "$model" --split test --max-tokens "$max_tokens" --threads "$threads" --json --sweep "$@" > "$dest.tmp"
  mv "$dest.tmp" "$dest"
}
paths=()
for bits in w8a8 w4a8 w4a4; do
  for act in tensor token; do
    for alg in rtn gptq; do
      base="recipes/$bits-$act-$alg.toml"
      [ -f "$base" ] || { echo "missing recipe $base" >&2; exit 1; }
      bash scripts/smoothquant_recipe.sh "$base" "$alpha" "$out/recipes/$bits-$act-$alg-sq.toml"
      paths+=("$base" "$out/recipes/$bits-$act-$alg-sq.toml")
    done
  done
done
echo "table: ${#paths[@]} recipes" >&2
eval_sweep "$out/table.json" "${paths[@]}"
paths=()
for r in $alpha_recipes; do
  for a in $alphas; do
    bash scripts/smoothquant_recipe.sh "recipes/$r.toml" "$a" "$out/recipes/$r-sq$a.toml" "$r-sq$a"
    paths+=("$out/recipes/$r-sq$a.toml")
  done
done
echo "alpha sweep: ${#paths[@]} recipes" >&2
eval_sweep "$out/alpha.json" "${paths[@]}"
python3 - "$out" "$alpha" "$alphas" "$alpha_recipes" <<'PY'
import json, math, os, sys
out, alpha, alphas, recipes = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
table = {r["name"]: r for r in json.load(open(os.path.join(out, "table.json")))}
sweep = {r["name"]: r for r in json.load(open(os.path.join(out, "alpha.json")))}
f = table["float"]["perplexity"]
lines = [f"Float model (W16A16): perplexity {f:.2f} on {table['float']['tokens']:,} test tokens. SmoothQuant alpha {alpha}.", "",
         "| weights / activations | algorithm | ppl | ppl + SQ | KL | KL + SQ | top-1 | top-1 + SQ |", "|---|---|---|---|---|---|---|---|"]
for bits in ["w8a8", "w4a8", "w4a4"]:
    for act in ["tensor", "token"]:
        for alg in ["rtn", "gptq"]:
            a, b = table[f"{bits}-{act}-{alg}"], table[f"{bits}-{act}-{alg}-sq"]
            label = f"{bits.upper()} {'static per-tensor' if act == 'tensor' else 'dynamic per-token'}"
            lines.append(f"| {label} | {alg.upper()} | {a['perplexity']:.2f} | {b['perplexity']:.2f} | {a['kl_mean']:.5f} | "
                         f"{b['kl_mean']:.5f} | {100*a['top1_agreement']:.1f}% | {100*b['top1_agreement']:.1f}% |")
lines += ["", "Alpha sweep (perplexity; the first column is without SmoothQuant):", "",
          "| recipe | none | " + " | ".join(alphas) + " |", "|---|---|" + "---|" * len(alphas)]
score = {a: 0.0 for a in alphas}
for r in recipes:
    base = table[r]["perplexity"]
    row = [sweep[f"{r}-sq{a}"]["perplexity"] for a in alphas]
    for a, p in zip(alphas, row): score[a] += math.log(p / base) / len(recipes)
    lines.append(f"| {r} | {base:.2f} | " + " | ".join(f"{p:.2f}" for p in row) + " |")
lines.append("| mean log-ratio to none | 0 | " + " | ".join(f"{score[a]:+.3f}" for a in alphas) + " |")
best = min(alphas, key=lambda a: score[a])
lines += ["", f"Best alpha by the mean log perplexity ratio over these recipes: {best}."]
json.dump({"alpha": alpha, "float_ppl": f, "table": list(table.values()), "alpha_sweep": list(sweep.values()),
           "alpha_score": score, "best_alpha": best}, open(os.path.join(out, "summary.json"), "w"), indent=1)
open(os.path.join(out, "smoothquant.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
