#!/usr/bin/env bash
# Writes the SmoothQuant variant of a recipe: the same recipe with methods = ["smoothquant"] and a
# [smoothquant] table (alpha for both norm->linear slots), named <name>-sq or <name>-sq<alpha>.
# Usage: scripts/smoothquant_recipe.sh BASE.toml ALPHA OUT.toml [NAME]
set -euo pipefail
base="$1" alpha="$2" out="$3"
stem="$(basename "$base" .toml)"
name="${4:-$stem-sq}"
grep -q '^methods = \[\]' "$base" || { echo "smoothquant_recipe: $base has no 'methods = []' line to replace" >&2; exit 1; }
tmp="$out.tmp.$$"
sed -e "s/^name = \"$stem\"/name = \"$name\"/" \
    -e "s/^\(# .*\)$/\1 + SmoothQuant (alpha $alpha)/;1!s/ + SmoothQuant (alpha $alpha)$//" \
    -e "s/^description = \"\(.*\)\"$/description = \"\1 + SmoothQuant (alpha $alpha)\"/" \
    -e "s/^methods = \[\]$/methods = [\"smoothquant\"]/" "$base" > "$tmp"
printf '\n[smoothquant]           # per-channel smoothing at the norm->q/k/v and norm->gate/up junctions\nalpha = %s\nslots = ["qkv", "gate_up"]\n' "$alpha" >> "$tmp"
mv "$tmp" "$out"
