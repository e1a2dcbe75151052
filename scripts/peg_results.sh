#!/usr/bin/env bash
# Per-embedding-group quantization and mixed precision on float models (the third seed paper's
# cures), W8A8 and W8A4 with static activation ranges: per-tensor; PEG K = 6 without permutation,
# with one permutation per tensor and with one shared along each layer's residual stream;
# per-embedding (K = the width); and the mixed-precision recipe `outq sensitivity` suggests. Each
# both with the linear inputs quantized (the integer runtime's setting) and in full-integer mode
# (every tensor of the block, the paper's setting). Perplexity, KL and top-1 agreement against each
# model's float self on the test split; the sensitivity rankings on the validation split.
# Writes OUT/<name>/{sweep.json, sensitivity-*/} and OUT/peg.md.
# Usage: scripts/peg_results.sh OUT_DIR NAME=MODEL_DIR...
#        (THREADS=2, MAX_TOKENS=32768 test tokens, SENS_TOKENS=16384, TOLERANCE=0.001,
#         SENS_RECIPES="w8a8-tensor-rtn-full w8a4-tensor-rtn-full w8a8-tensor-rtn w8a4-tensor-rtn")
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/peg_results.sh OUT_DIR NAME=MODEL_DIR...}"
shift
threads="${THREADS:-2}" max_tokens="${MAX_TOKENS:-32768}" sens_tokens="${SENS_TOKENS:-16384}" tol="${TOLERANCE:-0.001}"
sens_recipes="${SENS_RECIPES:-w8a8-tensor-rtn-full w8a4-tensor-rtn-full w8a8-tensor-rtn w8a4-tensor-rtn}"
outq=build/apps/outq/outq
[ -x "$outq" ] || { echo "build outq first: bash scripts/build.sh" >&2; exit 1; }
export OUTQ_PROGRESS="${OUTQ_PROGRESS:-off}"
mkdir -p "$out"
names=()
for spec in "$@"; do
  name="${spec%%=*}" model="${spec#*=}"
  names+=("$name")
  dir="$out/$name" rdir="$out/$name/recipes"
  mkdir -p "$rdir"
  hidden=$(python3 -c "import json; print(json.load(open('$model/config.json'))['hidden_size'])")
  inter=$(python3 -c "import json; print(json.load(open('$model/config.json'))['intermediate_size'])")
  # Recipe variants: activation bits (8, 4) x (linear inputs, full-integer); per-embedding = K = width.
  python3 - "$rdir" "$hidden" "$inter" <<'PY'
import re, sys
rdir, hidden, inter = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bases = ["w8a8-tensor-rtn", "w8a8-peg6-rtn", "w8a8-peg6perm-rtn", "w8a8-peg6shared-rtn"]
def variant(text, stem, bits, full):
    name = stem.replace("a8", f"a{bits}", 1) + ("-full" if full else "")
    if full and "pegemb" in stem:  # the MLP's gate/up outputs are intermediate-wide too
        for m in ("gate_proj", "up_proj"):
            text += (f'\n[[tensors]]\npoints = "model.layers.*.mlp.{m}.output"\n'
                     f'activations = {{ granularity = "peg", peg_groups = {inter} }}\n')
    text = re.sub(r'^name = ".*"', f'name = "{name}"' + ("\nfull_integer = true" if full else ""), text, flags=re.M)
    text = re.sub(r'(\[activations\]\nbits = )8', rf'\g<1>{bits}', text)
    open(f"{rdir}/{name}.toml", "w").write(text)
for stem in bases:
    text = open(f"recipes/{stem}.toml").read()
    for bits in (8, 4):
        for full in (False, True):
            variant(text, stem, bits, full)
emb = open("recipes/w8a8-peg6-rtn.toml").read().replace("w8a8-peg6-rtn", "w8a8-pegemb-rtn")
emb = emb.replace("peg_groups = 6", f"peg_groups = {hidden}")
emb += f'\n[[override]]\nmodules = "model.layers.*.mlp.down_proj"\nactivations = {{ peg_groups = {inter} }}\n'
for bits in (8, 4):
    for full in (False, True):
        variant(emb, "w8a8-pegemb-rtn", bits, full)
PY
  # Sensitivity (validation split) of the per-tensor recipes: rankings and mixed-precision suggestions.
  for r in $sens_recipes; do
    [ -s "$dir/sens-$r/sensitivity.json" ] && { echo "reusing $dir/sens-$r" >&2; continue; }
    echo "$name: sensitivity of $r" >&2
    "$outq" sensitivity --model "$model" --recipe "$rdir/$r.toml" --out "$dir/sens-$r" --overwrite \
      --max-tokens "$sens_tokens" --tolerance "$tol" --per-layer-types "${PER_LAYER_TYPES:-3}" --threads "$threads" \
      > "$dir/sens-$r.txt"
  done
  if [ -s "$dir/sweep.json" ]; then
    echo "reusing $dir/sweep.json (delete it to redo)" >&2
  else
    recipes=()
    for bits in 8 4; do
      for full in "" "-full"; do
        for stem in tensor peg6 peg6perm peg6shared pegemb; do recipes+=("$rdir/w8a${bits}-$stem-rtn$full.toml"); done
        mp="$dir/sens-w8a${bits}-tensor-rtn$full/w8a${bits}-tensor-rtn$full-mp.toml"
        [ -f "$mp" ] && recipes+=("$mp")
      done
    done
    echo "$name: ${#recipes[@]} recipes on $model" >&2
    "$outq" eval --model "$model" --split test --max-tokens "$max_tokens" --threads "$threads" --json --sweep "${recipes[@]}" \
      > "$dir/sweep.json.tmp"
    mv "$dir/sweep.json.tmp" "$dir/sweep.json"
  fi
done
python3 - "$out" "${names[@]}" <<'PY'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
lines = []
labels = [("tensor", "per-tensor"), ("peg6", "PEG K = 6"), ("peg6perm", "PEG K = 6 + permutation"),
          ("peg6shared", "PEG K = 6 + shared permutation"), ("pegemb", "per-embedding (K = width)"),
          ("mp", "mixed precision (sensitivity)")]
for name in names:
    rows = json.load(open(f"{out}/{name}/sweep.json"))
    by = {r["name"]: r for r in rows}
    fl = rows[0]["perplexity"]
    lines += [f"**{name}** (float perplexity {fl:.2f}, {rows[0]['tokens']} test tokens; Δ vs float, and the share of "
              "the per-tensor → float gap recovered)", "",
              "| activations | W8A8 linear inputs | W8A8 full-integer | W8A4 linear inputs | W8A4 full-integer |",
              "|---|---:|---:|---:|---:|"]
    def recipe(stem, bits, full):
        n = f"w8a{bits}-tensor-rtn{'-full' if full else ''}-mp" if stem == "mp" else f"w8a{bits}-{stem}-rtn{'-full' if full else ''}"
        return by.get(n)
    for stem, label in labels:
        cells = []
        for bits in (8, 4):
            for full in (False, True):
                r, base = recipe(stem, bits, full), recipe("tensor", bits, full)
                if not r:
                    cells.append("-"); continue
                gap = base["perplexity"] - fl
                rec = "" if stem == "tensor" or gap <= 0 else f", {100 * (base['perplexity'] - r['perplexity']) / gap:.0f}% of gap"
                cells.append(f"{r['perplexity']:.2f} ({100 * (r['perplexity'] / fl - 1):+.2f}%{rec})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    for r in ["w8a8-tensor-rtn-full", "w8a4-tensor-rtn-full", "w8a8-tensor-rtn", "w8a4-tensor-rtn"]:
        if not os.path.exists(f"{out}/{name}/sens-{r}/sensitivity.json"): continue
        s = json.load(open(f"{out}/{name}/sens-{r}/sensitivity.json"))
        loo = sorted(s["leave_one_out"], key=lambda x: x["perplexity"])
        lines.append(f"{name} `{r}` leave-one-out (val; all quantized {s['all_perplexity']:.2f}, weights only "
                     f"{s['weights_only_perplexity']:.2f}): " +
                     ", ".join(f"{x['type']} {x['perplexity']:.2f}" for x in loo[:5]) +
                     f"; suggestion: {', '.join(s['suggested_16bit']) or 'nothing'} at 16 bits"
                     + ("" if s["reached"] else " (target not reached)"))
        pl = s["per_layer_leave_one_out"]
        if pl:
            worst = loo[0]["type"]
            lines.append(f"  per layer ({worst}): " + ", ".join(f"L{x['layer']} {x['perplexity']:.2f}" for x in pl if x["type"] == worst))
    lines.append("")
open(f"{out}/peg.md.tmp", "w").write("\n".join(lines) + "\n")
os.replace(f"{out}/peg.md.tmp", f"{out}/peg.md")
print("\n".join(lines))
PY
