#!/usr/bin/env bash
# Activation spikes on a float model: W8A8 per-tensor dynamic and static, W4A8 and W4A4 static,
# each plain, + SmoothQuant, + QFeM, + QFeP, + QFeM + QFeP and + all three (perplexity, KL and top-1
# agreement against the float model on the test split); the spike ratio of every input, the QFeM
# exclusion and threshold curve (W8A8 and W4A4 static) and the QFeP prefix from quantized
# directories; the float model after the prefix (recipes/w16a16-qfep.toml) as the QFeP rows'
# reference. Writes OUT/table.json, OUT/float-qfep.json, OUT/q-*/ (quant_config.json,
# qfem_threshold.png) and OUT/spikes.md.
# Usage: scripts/spike_results.sh MODEL_DIR OUT_DIR   (THREADS=2, MAX_TOKENS=32768 test tokens)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:?usage: scripts/spike_results.sh MODEL_DIR OUT_DIR}"
out="${2:?usage: scripts/spike_results.sh MODEL_DIR OUT_DIR}"
threads="${THREADS:-2}" max_tokens="${MAX_TOKENS:-32768}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
mkdir -p "$out/recipes"
paths=()
for base in w8a8-dtensor-rtn w8a8-tensor-rtn w4a8-tensor-gptq w4a4-tensor-gptq; do
  paths+=("recipes/$base.toml")
  for ms in "smoothquant" "qfem" "qfep" "qfem qfep" "smoothquant qfem qfep"; do
    suffix=""; for m in smoothquant qfem qfep; do case " $ms " in *" $m "*) [ $m = smoothquant ] && suffix+="-sq" || suffix+="-$m";; esac; done
    bash scripts/method_recipe.sh "recipes/$base.toml" "$out/recipes/$base$suffix.toml" "$ms"
    paths+=("$out/recipes/$base$suffix.toml")
  done
done
if [ -s "$out/table.json" ]; then
  echo "reusing $out/table.json (delete it to redo)" >&2
else
  echo "table: ${#paths[@]} recipes" >&2
  "$outq" eval --model "$model" --split test --max-tokens "$max_tokens" --threads "$threads" --json --sweep "${paths[@]}" \
    > "$out/table.json.tmp"
  mv "$out/table.json.tmp" "$out/table.json"
fi
# The float model after the QFeP prefix (nothing quantized): the reference for the QFeP rows.
if [ ! -s "$out/float-qfep.json" ]; then
  "$outq" eval --model "$model" --split test --max-tokens "$max_tokens" --threads "$threads" --json \
    --recipe recipes/w16a16-qfep.toml > "$out/float-qfep.json.tmp"
  mv "$out/float-qfep.json.tmp" "$out/float-qfep.json"
fi
for r in w8a8-tensor-rtn-qfem w4a4-tensor-gptq-qfem w8a8-tensor-rtn-qfep; do
  [ -s "$out/q-$r/quant_config.json" ] && continue
  "$outq" quantize --model "$model" --recipe "$out/recipes/$r.toml" --out "$out/q-$r" --threads "$threads" --json \
    > "$out/q-$r.json"
done
python3 - "$out" "$model" <<'PY'
import json, math, sys
out, model = sys.argv[1], sys.argv[2]
rows = json.load(open(f"{out}/table.json"))
rows.insert(1, json.load(open(f"{out}/float-qfep.json")))  # float after the prefix (one row: an object)
def cfg(r): return json.load(open(f"{out}/q-{r}/quant_config.json"))
def method(r, name): return next(m for m in cfg(r)["methods"] if m["name"] == name)
lines = [f"Model `{model}`, test split, {rows[0]['tokens']} tokens; KL and top-1 against the float model "
         "(QFeP rows: both continue after the prefix; windows of 254 tokens instead of 256 so the prefix fits).", "",
         "| recipe | perplexity | KL | top-1 |", "|---|---:|---:|---:|"]
for r in rows:
    kl = r.get("kl_mean"); t1 = r.get("top1_agreement")
    lines.append(f"| {r['name']} | {r['perplexity']:.2f} | {'' if kl is None else f'{kl:.4f}'} | "
                 f"{'' if t1 is None else f'{100*t1:.1f}%'} |")
qfem = method("w8a8-tensor-rtn-qfem", "qfem")["state"]
lines += ["", f"Spike ratios (max / median token-wise |x| per sequence, mean over {qfem['calibration_sequences']} "
          "calibration windows), largest first:", "", "| input of | slot | ratio | peak |x| | median |x| |", "|---|---|---:|---:|---:|"]
for s in sorted(qfem["spikes"], key=lambda s: -s["ratio"]):
    lines.append(f"| {s['module']} | {s['slot']} | {s['ratio']:.1f} | {s['peak']:.1f} | {s['median']:.2f} |")
for r in ("w8a8-tensor-rtn-qfem", "w4a4-tensor-gptq-qfem"):
    st = method(r, "qfem")["state"]
    lines += ["", f"QFeM threshold search, {r} (held-out calibration perplexity by inputs kept in float; "
              f"excluded: {', '.join(st['excluded']) or 'none'}):", "", "| slots excluded | threshold | perplexity |", "|---:|---:|---:|"]
    for c in st["curve"]:
        th = "none" if c["threshold"] is None else f"{c['threshold']:.1f}"
        lines.append(f"| {c['slots_excluded']} | {th} | {c['perplexity']:.2f} |")
qfep = method("w8a8-tensor-rtn-qfep", "qfep")["state"]
pieces = json.load(open(f"{out}/q-w8a8-tensor-rtn-qfep.json"))["prefix"]["pieces"]
lines += ["", f"QFeP prefix: {' '.join(pieces)} (ids {qfep['tokens']}), searched at {qfep.get('top_module')} "
          f"(ratio {qfep.get('top_ratio', 0):.1f}); candidates:", "", "| token | best context | calibration peak | first / repeat |",
          "|---:|---:|---:|---:|"]
for c in qfep["candidates"]:
    lines.append(f"| {c['token']} | {c['context']} | {c['peak']:.1f} | {c['ratio']:.2f} |")
open(f"{out}/spikes.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
