#!/usr/bin/env bash
# Rotation against the other cures on float and QAT models: W4A4 with static per-tensor and dynamic
# per-token activations, RTN and GPTQ weights, each without and with rotation (recipes/*-rot.toml),
# rotation + SmoothQuant and + QFeM, W8A8 and W4A8 static; on a QAT model also its learned-range
# recipes. Perplexity, KL and top-1 agreement against each model's float self on the test split.
# Writes OUT/<name>.json per model and OUT/rotation.md (one table per model).
# Usage: scripts/rotation_results.sh OUT_DIR NAME=MODEL_DIR...   (THREADS=2, MAX_TOKENS=32768)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/rotation_results.sh OUT_DIR NAME=MODEL_DIR...}"
shift
threads="${THREADS:-2}" max_tokens="${MAX_TOKENS:-32768}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
mkdir -p "$out"
names=()
for spec in "$@"; do
  name="${spec%%=*}" model="${spec#*=}"
  names+=("$name")
  recipes=()
  for base in w4a4-tensor-rtn w4a4-tensor-gptq w4a4-token-rtn w4a4-token-gptq w8a8-tensor-rtn w4a8-tensor-gptq; do
    recipes+=("recipes/$base.toml" "recipes/$base-rot.toml")
  done
  recipes+=(recipes/w4a4-tensor-gptq-sq.toml recipes/w4a4-tensor-gptq-rot-sq.toml recipes/w4a4-tensor-gptq-qfem.toml
            recipes/w4a4-tensor-gptq-rot-qfem.toml)
  [ -f "$model/clips.json" ] && recipes+=(recipes/w4a4-learned-rtn.toml recipes/w4a4-learned-gptq.toml)
  if [ -s "$out/$name.json" ]; then
    echo "reusing $out/$name.json (delete it to redo)" >&2
    continue
  fi
  echo "$name: ${#recipes[@]} recipes on $model" >&2
  "$outq" eval --model "$model" --split test --max-tokens "$max_tokens" --threads "$threads" --json --sweep "${recipes[@]}" \
    > "$out/$name.json.tmp"
  mv "$out/$name.json.tmp" "$out/$name.json"
done
python3 - "$out" "${names[@]}" <<'PY'
import json, sys
out, names = sys.argv[1], sys.argv[2:]
lines = []
for name in names:
    rows = json.load(open(f"{out}/{name}.json"))
    by = {r["name"]: r for r in rows}
    fl = rows[0]["perplexity"]
    lines += [f"**{name}** (float perplexity {fl:.2f}, {rows[0]['tokens']} test tokens)", "",
              "| recipe | without rotation | with rotation | KL without / with | top-1 without / with |",
              "|---|---:|---:|---:|---:|"]
    def cell(r): return f"{r['perplexity']:.2f} ({100 * (r['perplexity'] / fl - 1):+.1f}%)"
    for r in rows[1:]:
        n = r["name"]
        if "-rot" in n: continue
        rot = n.replace("-gptq", "-gptq-rot", 1).replace("-rtn", "-rtn-rot", 1) if "-sq" not in n and "-qfem" not in n \
              else n.replace("-gptq-", "-gptq-rot-", 1)
        w = by.get(rot)
        lines.append(f"| {n} | {cell(r)} | {cell(w) if w else '-'} | {r['kl_mean']:.4f} / {w['kl_mean']:.4f} | "
                     f"{100 * r['top1_agreement']:.1f}% / {100 * w['top1_agreement']:.1f}% |" if w else
                     f"| {n} | {cell(r)} | - | {r['kl_mean']:.4f} | {100 * r['top1_agreement']:.1f}% |")
    lines.append("")
open(f"{out}/rotation.md.tmp", "w").write("\n".join(lines) + "\n")
import os; os.replace(f"{out}/rotation.md.tmp", f"{out}/rotation.md")
print("\n".join(lines))
PY
