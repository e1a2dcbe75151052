#!/usr/bin/env bash
# Evaluates the QAT ablation: every trained mode under the same set of recipes on the test split,
# plus its outlier and weight statistics, into one table (markdown for people, JSON for programs).
# Usage: scripts/qat_ablation.sh RUNS_ROOT [MODE...]
#   RUNS_ROOT/<mode>/model is an `outq train` output (modes: float clamp kurtosis qat qat+kurtosis).
#   Writes RUNS_ROOT/$TABLE.json and RUNS_ROOT/$TABLE.md (TABLE=ablation by default).
# Models with learned (or fixed clamp) clips use them as static A4 ranges (recipes *-learned-*);
# the others use min-max calibrated ranges (recipes *-tensor-*). Every model also gets the PTQ
# baselines: W16A4 static per-tensor min-max, W16A4 per-token dynamic, W4A4 GPTQ per-token.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:?usage: scripts/qat_ablation.sh RUNS_ROOT [MODE...]}"; shift
modes=("$@"); [ ${#modes[@]} -gt 0 ] || modes=(float clamp kurtosis qat qat+kurtosis)
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
threads="${THREADS:-2}"
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
for mode in "${modes[@]}"; do
  model="$root/$mode/model"
  [ -f "$model/model.safetensors" ] || { echo "missing model: $model" >&2; exit 1; }
  if [ -f "$model/clips.json" ]; then kind=learned; else kind=tensor; fi
  recipes=(w16a4-tensor w16a4-token w4a4-token-gptq)
  if [ $kind = learned ]; then recipes+=(w16a4-learned w4a4-learned-rtn w4a4-learned-gptq w3a4-learned-gptq)
  else recipes+=(w4a4-tensor-rtn w4a4-tensor-gptq w3a4-tensor-gptq); fi
  paths=(); for r in "${recipes[@]}"; do paths+=("recipes/$r.toml"); done
  # Results newer than the model are reused (delete eval.json / analysis/ to redo them).
  if [ "$root/$mode/eval.json" -nt "$model/model.safetensors" ]; then
    echo "[$mode] evaluation: reusing $root/$mode/eval.json" >&2
  else
    echo "[$mode] evaluating ${#recipes[@]} recipes + float" >&2
    "$outq" eval --model "$model" --split test --threads "$threads" --json --sweep "${paths[@]}" > "$root/$mode/eval.json.tmp"
    mv "$root/$mode/eval.json.tmp" "$root/$mode/eval.json"
  fi
  # (analyses from before `outq analyze` ran QAT models with their clips have no "clips" key: redone)
  if [ "$root/$mode/analysis/analysis.json" -nt "$model/model.safetensors" ] && grep -q '"clips"' "$root/$mode/analysis/analysis.json"; then
    echo "[$mode] analysis: reusing $root/$mode/analysis" >&2
  else
    echo "[$mode] analysing" >&2
    "$outq" analyze --model "$model" --split test --threads "$threads" --max-tokens 32768 --out "$root/$mode/analysis" > /dev/null
  fi
done
python3 - "$root" "${TABLE:-ablation}" "${modes[@]}" <<'PY'
import json, os, statistics, sys
root, table, modes = sys.argv[1], sys.argv[2], sys.argv[3:]
cols = [("W16A16", "float"), ("native", None), ("W16A4 tensor min-max", "w16a4-tensor"),
        ("W16A4 per-token", "w16a4-token"), ("W4A4 RTN", "w4a4-{k}-rtn"), ("W4A4 GPTQ", "w4a4-{k}-gptq"),
        ("W3A4 GPTQ", "w3a4-{k}-gptq"), ("W4A4 GPTQ per-token", "w4a4-token-gptq")]
rows = []
for mode in modes:
    d = os.path.join(root, mode)
    ev = {r["name"]: r for r in json.load(open(os.path.join(d, "eval.json")))}
    kind = "learned" if os.path.exists(os.path.join(d, "model", "clips.json")) else "tensor"
    an = json.load(open(os.path.join(d, "analysis", "analysis.json")))
    metrics = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]
    train = [m for m in metrics if m["type"] == "train"]
    row = {"mode": mode, "static_ranges": kind, "steps": train[-1]["step"], "tokens": train[-1]["tokens"],
           "train_seconds": train[-1]["elapsed_s"], "ppl": {}}
    for label, name in cols:
        if name is None:
            name = "w16a4-learned" if kind == "learned" else "float"
        name = name.format(k=kind)
        row["ppl"][label] = ev[name]["perplexity"]
        row.setdefault("recipe", {})[label] = name
    w = an["weights"]
    row["weight_in_max_median"] = max(x["in_max_median"] for x in w)
    row["weight_in_max_median_mean"] = statistics.mean(x["in_max_median"] for x in w)
    bt = an["by_layer_type"]
    row["outlier_channels"] = {k: sum(v["outliers"]) for k, v in bt.items()}
    row["down_input_kurtosis_max"] = max(bt["mlp_down_input"]["kurtosis_max"])
    row["max_abs_input"] = max(p["max_abs"] for p in an["points"] if p["name"].endswith(".input"))
    rows.append(row)
base = next((r["ppl"]["W16A16"] for r in rows if r["mode"].split("-")[0] == "float"), None)
json.dump({"rows": rows, "float_w16a16": base}, open(os.path.join(root, table + ".json"), "w"), indent=2)
labels = [c[0] for c in cols]
out = ["| mode | tokens | " + " | ".join(labels) + " | W in-ch max/median (max, mean) | outlier ch. (down / all) | max kurt. down in | max abs in |",
       "|---|---|" + "---|" * len(labels) + "---|---|---|---|"]
for r in rows:
    cells = [f'{r["ppl"][l]:.2f}' for l in labels]
    oc = r["outlier_channels"]
    out.append(f'| {r["mode"]} | {r["tokens"]/1e6:.2f}M | ' + " | ".join(cells) +
               f' | {r["weight_in_max_median"]:.2f}, {r["weight_in_max_median_mean"]:.2f} | {oc.get("mlp_down_input", 0)} / {sum(oc.values())}'
               f' | {r["down_input_kurtosis_max"]:.1f} | {r["max_abs_input"]:.1f} |')
if base:
    out.append("")
    out.append("Ratios to the float model's W16A16 perplexity (" + f"{base:.2f}" + "):")
    out.append("")
    out.append("| mode | " + " | ".join(labels) + " |")
    out.append("|---|" + "---|" * len(labels))
    for r in rows:
        out.append(f'| {r["mode"]} | ' + " | ".join(f'{r["ppl"][l] / base:.3f}' for l in labels) + " |")
open(os.path.join(root, table + ".md"), "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
